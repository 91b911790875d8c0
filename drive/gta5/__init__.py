"""The Windows side of GTA V: window finding and capture, SendInput, key reading by scan code, hotkeys,
high-resolution waits. Every Win32 call goes through win32.User32 / win32.Kernel32, so the logic runs on
Linux in tests with a fake in their place."""
