"""The only module that calls Win32 (user32 / kernel32 through ctypes); everything else takes a WindowsApi.

Signatures, constants and struct layouts follow Microsoft's documentation (learn.microsoft.com, winuser.h
and synchapi.h): EnumWindows, GetWindowTextW, GetClassNameW, IsWindowVisible, IsIconic, IsWindow,
GetClientRect, ClientToScreen, GetForegroundWindow, GetWindowThreadProcessId, GetKeyboardLayout,
MapVirtualKeyExW, GetAsyncKeyState, SendInput, SetProcessDpiAwarenessContext, CreateWaitableTimerExW,
SetWaitableTimer, WaitForSingleObject, GetCurrentThread, SetThreadPriority.
"""
import ctypes
import sys
import time
from ctypes import wintypes
from typing import Protocol

from data.errors import UserError
from data.screen import Region

MAPVK_VSC_TO_VK_EX = 3  # scan code → virtual key, left/right distinguished; 0xE0 in the high byte: extended
INPUT_KEYBOARD = 1
KEYEVENTF_EXTENDEDKEY = 0x0001
KEYEVENTF_KEYUP = 0x0002
KEYEVENTF_SCANCODE = 0x0008
CREATE_WAITABLE_TIMER_HIGH_RESOLUTION = 0x00000002  # Windows 10 1803 and later
TIMER_ALL_ACCESS = 0x1F0003
INFINITE = 0xFFFFFFFF
WAIT_OBJECT_0 = 0
DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 = -4
THREAD_PRIORITY_HIGHEST = 2


class WindowsApi(Protocol):
    """What the GTA V side needs from Windows; drive.gta5 tests pass a fake."""

    def top_level_windows(self) -> list[int]: ...

    def title(self, hwnd: int) -> str: ...

    def class_name(self, hwnd: int) -> str: ...

    def is_visible(self, hwnd: int) -> bool: ...

    def is_minimised(self, hwnd: int) -> bool: ...

    def exists(self, hwnd: int) -> bool: ...

    def client_region(self, hwnd: int) -> Region: ...  # the client area in screen pixels

    def foreground_window(self) -> int: ...

    def scan_to_vk(self, scan: int) -> int: ...  # in the layout of the window that has focus; 0: none

    def key_down(self, vk: int) -> bool: ...  # GetAsyncKeyState's "held now" bit

    def send_scan_code(self, scan: int, up: bool) -> None: ...


# SendInput structures (winuser.h), sized for the running interpreter: INPUT is 40 bytes on 64-bit Windows.
class _MouseInput(ctypes.Structure):
    _fields_ = [("dx", ctypes.c_int32), ("dy", ctypes.c_int32), ("mouseData", ctypes.c_uint32),
                ("dwFlags", ctypes.c_uint32), ("time", ctypes.c_uint32), ("dwExtraInfo", ctypes.c_size_t)]


class _KeybdInput(ctypes.Structure):
    _fields_ = [("wVk", ctypes.c_uint16), ("wScan", ctypes.c_uint16), ("dwFlags", ctypes.c_uint32),
                ("time", ctypes.c_uint32), ("dwExtraInfo", ctypes.c_size_t)]


class _HardwareInput(ctypes.Structure):
    _fields_ = [("uMsg", ctypes.c_uint32), ("wParamL", ctypes.c_uint16), ("wParamH", ctypes.c_uint16)]


class _InputUnion(ctypes.Union):
    _fields_ = [("mi", _MouseInput), ("ki", _KeybdInput), ("hi", _HardwareInput)]


class _Input(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("u", _InputUnion)]


def scan_code_input(scan: int, up: bool) -> _Input:
    """The INPUT record that presses (up=False) or releases a key by its scan code; 0xE0xx is extended."""
    flags = KEYEVENTF_SCANCODE | (KEYEVENTF_KEYUP if up else 0) | (KEYEVENTF_EXTENDEDKEY if scan >> 8 == 0xE0 else 0)
    return _Input(type=INPUT_KEYBOARD, u=_InputUnion(ki=_KeybdInput(wScan=scan & 0xFF, dwFlags=flags)))


def require_windows(what: str) -> None:
    if sys.platform != "win32":
        raise UserError(f"{what} works on Windows only")


class User32:
    """WindowsApi over user32.dll; per-monitor DPI aware, so rectangles are physical pixels."""

    def __init__(self):
        require_windows("the GTA V window, SendInput and key reading")
        u = self._u = ctypes.WinDLL("user32", use_last_error=True)
        self._enum_proc = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
        u.EnumWindows.argtypes, u.EnumWindows.restype = [self._enum_proc, wintypes.LPARAM], wintypes.BOOL
        for name in ("IsWindowVisible", "IsIconic", "IsWindow"):
            getattr(u, name).argtypes, getattr(u, name).restype = [wintypes.HWND], wintypes.BOOL
        u.GetWindowTextLengthW.argtypes, u.GetWindowTextLengthW.restype = [wintypes.HWND], ctypes.c_int
        u.GetWindowTextW.argtypes = [wintypes.HWND, wintypes.LPWSTR, ctypes.c_int]
        u.GetClassNameW.argtypes = [wintypes.HWND, wintypes.LPWSTR, ctypes.c_int]
        u.GetClientRect.argtypes = [wintypes.HWND, ctypes.POINTER(wintypes.RECT)]
        u.ClientToScreen.argtypes = [wintypes.HWND, ctypes.POINTER(wintypes.POINT)]
        u.GetForegroundWindow.argtypes, u.GetForegroundWindow.restype = [], wintypes.HWND
        u.GetWindowThreadProcessId.argtypes = [wintypes.HWND, ctypes.POINTER(wintypes.DWORD)]
        u.GetWindowThreadProcessId.restype = wintypes.DWORD
        u.GetKeyboardLayout.argtypes, u.GetKeyboardLayout.restype = [wintypes.DWORD], wintypes.HKL
        u.MapVirtualKeyExW.argtypes = [wintypes.UINT, wintypes.UINT, wintypes.HKL]
        u.MapVirtualKeyExW.restype = wintypes.UINT
        u.GetAsyncKeyState.argtypes, u.GetAsyncKeyState.restype = [ctypes.c_int], ctypes.c_short
        u.SendInput.argtypes = [wintypes.UINT, ctypes.POINTER(_Input), ctypes.c_int]
        u.SendInput.restype = wintypes.UINT
        try:
            u.SetProcessDpiAwarenessContext(ctypes.c_void_p(DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2))
        except AttributeError:  # before Windows 10 1703
            ctypes.windll.shcore.SetProcessDpiAwareness(2)

    def top_level_windows(self) -> list[int]:
        found = []
        self._u.EnumWindows(self._enum_proc(lambda hwnd, _: found.append(hwnd) or True), 0)
        return found

    def title(self, hwnd: int) -> str:
        buf = ctypes.create_unicode_buffer(self._u.GetWindowTextLengthW(hwnd) + 1)
        self._u.GetWindowTextW(hwnd, buf, len(buf))
        return buf.value

    def class_name(self, hwnd: int) -> str:
        buf = ctypes.create_unicode_buffer(257)  # class names are at most 256 characters
        self._u.GetClassNameW(hwnd, buf, len(buf))
        return buf.value

    def is_visible(self, hwnd: int) -> bool:
        return bool(self._u.IsWindowVisible(hwnd))

    def is_minimised(self, hwnd: int) -> bool:
        return bool(self._u.IsIconic(hwnd))

    def exists(self, hwnd: int) -> bool:
        return bool(self._u.IsWindow(hwnd))

    def client_region(self, hwnd: int) -> Region:
        rect, origin = wintypes.RECT(), wintypes.POINT(0, 0)
        self._u.GetClientRect(hwnd, ctypes.byref(rect))
        self._u.ClientToScreen(hwnd, ctypes.byref(origin))
        return Region(origin.x, origin.y, rect.right - rect.left, rect.bottom - rect.top)

    def foreground_window(self) -> int:
        return self._u.GetForegroundWindow() or 0

    def scan_to_vk(self, scan: int) -> int:
        thread = self._u.GetWindowThreadProcessId(self._u.GetForegroundWindow(), None)
        return self._u.MapVirtualKeyExW(scan, MAPVK_VSC_TO_VK_EX, self._u.GetKeyboardLayout(thread))

    def key_down(self, vk: int) -> bool:
        return bool(self._u.GetAsyncKeyState(vk) & 0x8000)

    def send_scan_code(self, scan: int, up: bool) -> None:
        record = scan_code_input(scan, up)
        if self._u.SendInput(1, ctypes.byref(record), ctypes.sizeof(record)) != 1:
            raise OSError(f"SendInput failed for scan code {scan:#x} (error {ctypes.get_last_error()}); "
                          "if the game runs as administrator, run this as administrator too")


class HighResolutionSleep:
    """sleep(seconds) on a high-resolution waitable timer (Windows 10 1803+): ~0.5 ms late at most instead
    of a 15.6 ms timer tick. Older Windows: time.sleep, which Python 3.11+ also makes high-resolution."""

    def __init__(self):
        require_windows("the high-resolution timer")
        k = self._k = ctypes.WinDLL("kernel32", use_last_error=True)
        k.CreateWaitableTimerExW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD]
        k.CreateWaitableTimerExW.restype = wintypes.HANDLE
        k.SetWaitableTimer.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.LARGE_INTEGER), wintypes.LONG,
                                       ctypes.c_void_p, ctypes.c_void_p, wintypes.BOOL]
        k.SetWaitableTimer.restype = wintypes.BOOL
        k.WaitForSingleObject.argtypes, k.WaitForSingleObject.restype = [wintypes.HANDLE, wintypes.DWORD], wintypes.DWORD
        self._timer = k.CreateWaitableTimerExW(None, None, CREATE_WAITABLE_TIMER_HIGH_RESOLUTION, TIMER_ALL_ACCESS)

    def __call__(self, seconds: float) -> None:
        if not self._timer:
            time.sleep(seconds)
            return
        due = wintypes.LARGE_INTEGER(-max(1, round(seconds * 1e7)))  # negative: relative, in 100 ns units
        if not self._k.SetWaitableTimer(self._timer, ctypes.byref(due), 0, None, None, False):
            raise OSError(f"SetWaitableTimer failed (error {ctypes.get_last_error()})")
        self._k.WaitForSingleObject(self._timer, INFINITE)


def raise_thread_priority() -> None:
    """The calling thread one step above normal (Windows; elsewhere nothing): key releases keep their time
    while the game keeps every core busy."""
    if sys.platform != "win32":
        return
    k = ctypes.WinDLL("kernel32", use_last_error=True)
    k.GetCurrentThread.argtypes, k.GetCurrentThread.restype = [], wintypes.HANDLE
    k.SetThreadPriority.argtypes, k.SetThreadPriority.restype = [wintypes.HANDLE, ctypes.c_int], wintypes.BOOL
    k.SetThreadPriority(k.GetCurrentThread(), THREAD_PRIORITY_HIGHEST)


def precise_sleep():
    """The sleep the key scheduler uses before a release: the high-resolution timer on Windows."""
    return HighResolutionSleep() if sys.platform == "win32" else time.sleep
