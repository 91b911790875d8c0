"""Key names → keyboard scan codes (set 1, as SendInput and the game's raw input see them).

Names are the keys of a US keyboard at the same physical place: "w" is the key left of "e" whatever
the layout prints on it (Z on AZERTY), so recording and driving press the same physical keys.
0xE0xx marks an extended key (arrows, right ctrl/alt, ...).
"""
from data.errors import UserError

_ROWS = {"1234567890": 0x02, "qwertyuiop": 0x10, "asdfghjkl": 0x1E, "zxcvbnm": 0x2C}
SCAN_CODES: dict[str, int] = {ch: first + i for row, first in _ROWS.items() for i, ch in enumerate(row)}
SCAN_CODES.update({f"f{i}": 0x3A + i for i in range(1, 11)} | {"f11": 0x57, "f12": 0x58})
SCAN_CODES.update({
    "esc": 0x01, "backspace": 0x0E, "tab": 0x0F, "enter": 0x1C, "space": 0x39, "caps lock": 0x3A,
    "left shift": 0x2A, "right shift": 0x36, "left ctrl": 0x1D, "right ctrl": 0xE01D, "left alt": 0x38,
    "right alt": 0xE038, "-": 0x0C, "=": 0x0D, "[": 0x1A, "]": 0x1B, ";": 0x27, "'": 0x28, "`": 0x29,
    "\\": 0x2B, ",": 0x33, ".": 0x34, "/": 0x35,
    "insert": 0xE052, "delete": 0xE053, "home": 0xE047, "end": 0xE04F, "page up": 0xE049, "page down": 0xE051,
    "up": 0xE048, "down": 0xE050, "left": 0xE04B, "right": 0xE04D,
})
ALIASES = {"escape": "esc", "return": "enter", "shift": "left shift", "ctrl": "left ctrl", "alt": "left alt",
           "del": "delete", "pgup": "page up", "pgdn": "page down", "capslock": "caps lock"}


def key_name(name: str, flag: str) -> str:
    """The canonical name of a hotkey given on the command line (`F9`, `Space`, `t`); one-line error otherwise."""
    canonical = " ".join(name.strip().lower().replace("_", " ").split())
    canonical = ALIASES.get(canonical, canonical)
    if canonical not in SCAN_CODES:
        raise UserError(f"{flag} {name!r}: unknown key; use a letter, a digit, f1..f12, space, enter, tab, esc, "
                        "backspace, insert, delete, home, end, page up, page down, or an arrow (up, down, left, right)")
    return canonical
