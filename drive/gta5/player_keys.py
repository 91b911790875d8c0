"""The player's key presses in GTA V, told apart from the agent's own, for drive.takeover.

A low-level keyboard hook (SetWindowsHookExW with WH_KEYBOARD_LL) sees every key event before any window
does, physical or injected; KBDLLHOOKSTRUCT.flags has LLKHF_INJECTED (bit 4) set for events sent by a
program, so the agent's SendInput presses never count as a takeover. Keys are named by scan code (the
same physical keys SendInput presses, whatever the keyboard layout).

Microsoft's rules for the hook, followed here: the hook procedure runs on the thread that installed it,
which must pump messages (GetMessageW); for nCode < 0 it must return CallNextHookEx's value without
processing, and otherwise should too; it must return quickly (a hook slower than LowLevelHooksTimeout,
at most 1 s, is silently removed), so it only queues the event. The thread's message queue is made with
PeekMessageW before anyone may post WM_QUIT to it (PostThreadMessageW fails on a thread without one).

Every Win32 call goes through a HookApi, so the logic runs on Linux in tests with a fake in its place.
"""
import ctypes
import sys
import threading
import time
from typing import Callable, Protocol

from data.errors import UserError
from data.labels import KEYS
from drive.gta5.scancodes import SCAN_CODES, key_name
from drive.takeover import KeyEvent

WH_KEYBOARD_LL = 13
HC_ACTION = 0
WM_KEYDOWN, WM_KEYUP, WM_SYSKEYDOWN, WM_SYSKEYUP = 0x0100, 0x0101, 0x0104, 0x0105
WM_QUIT = 0x0012
WM_USER = 0x0400
PM_NOREMOVE = 0x0000
LLKHF_INJECTED = 0x10



class KbdLLHookStruct(ctypes.Structure):
    """KBDLLHOOKSTRUCT: DWORD vkCode, scanCode, flags, time; ULONG_PTR dwExtraInfo."""

    _fields_ = [("vkCode", ctypes.c_uint32), ("scanCode", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("time", ctypes.c_uint32), ("dwExtraInfo", ctypes.c_size_t)]


def read_hook_struct(l_param: int) -> KbdLLHookStruct:
    """The KBDLLHOOKSTRUCT that a WH_KEYBOARD_LL hook's lParam points to (a copy)."""
    return KbdLLHookStruct.from_buffer_copy(ctypes.cast(l_param, ctypes.POINTER(KbdLLHookStruct)).contents)


class HookApi(Protocol):
    def install(self, proc: Callable[[int, int, int], int]) -> int: ...  # SetWindowsHookExW; the hook handle

    def call_next(self, n_code: int, w_param: int, l_param: int) -> int: ...  # CallNextHookEx

    def make_queue(self) -> None: ...  # PeekMessageW(PM_NOREMOVE): the calling thread gets a message queue

    def pump(self) -> int: ...  # GetMessageW once: 0 on WM_QUIT, -1 on error, else > 0

    def thread_id(self) -> int: ...  # GetCurrentThreadId

    def post_quit(self, thread_id: int) -> bool: ...  # PostThreadMessageW(thread_id, WM_QUIT, 0, 0)

    def uninstall(self, hook: int) -> bool: ...  # UnhookWindowsHookEx


class PlayerKeyHook:
    """A key-event source for drive.takeover.Takeover: call it to drain the events seen since the last call.

    w/a/s/d and the takeover key are reported by name, with injected=True for events a program sent."""

    def __init__(self, api: HookApi, takeover_key: str, clock: Callable[[], float] = time.perf_counter):
        takeover_key = key_name(takeover_key, "--takeover-key")
        self.api, self.clock = api, clock
        # the hook's scanCode lacks the 0xE0 prefix of extended keys (that is a flag): compare the low byte
        self.names = {SCAN_CODES[k] & 0xFF: k for k in (*KEYS, takeover_key)}
        self._events: list[KeyEvent] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread_id = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def proc(self, n_code: int, w_param: int, l_param: int) -> int:
        """The LowLevelKeyboardProc: queue the event (nothing slow here), then pass it on."""
        if n_code == HC_ACTION and w_param in (WM_KEYDOWN, WM_KEYUP, WM_SYSKEYDOWN, WM_SYSKEYUP):
            info = read_hook_struct(l_param)
            name = self.names.get(info.scanCode)
            if name is not None:
                event = KeyEvent(name, w_param in (WM_KEYDOWN, WM_SYSKEYDOWN), self.clock(),
                                 bool(info.flags & LLKHF_INJECTED))
                with self._lock:
                    self._events.append(event)
        return self.api.call_next(n_code, w_param, l_param)

    def __call__(self) -> list[KeyEvent]:
        if self._error is not None:
            raise RuntimeError("the keyboard hook thread failed") from self._error
        with self._lock:
            events, self._events = self._events, []
        return events

    def start(self, timeout: float = 5.0) -> "PlayerKeyHook":
        """Install the hook on a thread of its own that pumps messages until close()."""
        self._thread = threading.Thread(target=self._run, name="player-key-hook", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise UserError(f"cannot install the keyboard hook ({self._error or 'timed out'}); "
                            "leave out --record-corrections or run as the same user as the game")
        return self

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.api.post_quit(self._thread_id)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        hook = 0
        try:
            self.api.make_queue()
            self._thread_id = self.api.thread_id()
            hook = self.api.install(self.proc)
            if not hook:
                raise OSError("SetWindowsHookExW failed")
            self._ready.set()
            while self.api.pump() > 0:
                pass
        except BaseException as e:
            self._error = e
            self._ready.set()
        finally:
            if hook:
                self.api.uninstall(hook)


class Win32HookApi:
    """HookApi on user32 / kernel32 (Windows only)."""

    def __init__(self):
        if sys.platform != "win32":
            raise UserError("--record-corrections with --game gta5 reads the keyboard hook on Windows only")
        from ctypes import wintypes

        self._wintypes = wintypes
        self._u = ctypes.WinDLL("user32", use_last_error=True)
        self._k = ctypes.WinDLL("kernel32", use_last_error=True)
        lresult = ctypes.c_ssize_t  # LRESULT and LPARAM are pointer-sized signed, WPARAM unsigned
        self._hookproc = ctypes.WINFUNCTYPE(lresult, ctypes.c_int, wintypes.WPARAM, wintypes.LPARAM)
        self._u.SetWindowsHookExW.argtypes = [ctypes.c_int, self._hookproc, wintypes.HINSTANCE, wintypes.DWORD]
        self._u.SetWindowsHookExW.restype = ctypes.c_void_p
        self._u.CallNextHookEx.argtypes = [ctypes.c_void_p, ctypes.c_int, wintypes.WPARAM, wintypes.LPARAM]
        self._u.CallNextHookEx.restype = lresult
        self._u.UnhookWindowsHookEx.argtypes = [ctypes.c_void_p]
        self._u.UnhookWindowsHookEx.restype = wintypes.BOOL
        self._u.GetMessageW.argtypes = [ctypes.POINTER(wintypes.MSG), wintypes.HWND, wintypes.UINT, wintypes.UINT]
        self._u.GetMessageW.restype = wintypes.BOOL
        self._u.PeekMessageW.argtypes = [ctypes.POINTER(wintypes.MSG), wintypes.HWND, wintypes.UINT, wintypes.UINT,
                                         wintypes.UINT]
        self._u.PostThreadMessageW.argtypes = [wintypes.DWORD, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
        self._u.PostThreadMessageW.restype = wintypes.BOOL
        self._k.GetModuleHandleW.argtypes = [wintypes.LPCWSTR]
        self._k.GetModuleHandleW.restype = wintypes.HMODULE
        self._callback = None  # the C callback must outlive the hook

    def install(self, proc) -> int:
        self._callback = self._hookproc(proc)
        return self._u.SetWindowsHookExW(WH_KEYBOARD_LL, self._callback, self._k.GetModuleHandleW(None), 0) or 0

    def call_next(self, n_code: int, w_param: int, l_param: int) -> int:
        return self._u.CallNextHookEx(None, n_code, w_param, l_param)

    def make_queue(self) -> None:
        msg = self._wintypes.MSG()
        self._u.PeekMessageW(ctypes.byref(msg), None, WM_USER, WM_USER, PM_NOREMOVE)

    def pump(self) -> int:
        msg = self._wintypes.MSG()
        return self._u.GetMessageW(ctypes.byref(msg), None, 0, 0)

    def thread_id(self) -> int:
        return self._k.GetCurrentThreadId()

    def post_quit(self, thread_id: int) -> bool:
        return bool(self._u.PostThreadMessageW(thread_id, WM_QUIT, 0, 0))

    def uninstall(self, hook: int) -> bool:
        return bool(self._u.UnhookWindowsHookEx(hook))
