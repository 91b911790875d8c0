"""Screen rectangles (the capture geometry stored with each recording); capture itself is drive.gta5.capture."""
from dataclasses import dataclass

from data.errors import UserError


@dataclass(frozen=True)
class Region:
    left: int
    top: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> "Region":
        """'LEFT,TOP,WIDTH,HEIGHT' in screen pixels."""
        try:
            left, top, width, height = (int(v) for v in text.split(","))
        except ValueError:
            raise UserError(f"--region {text!r}: expected LEFT,TOP,WIDTH,HEIGHT in pixels, e.g. 0,0,800,600") from None
        if width <= 0 or height <= 0:
            raise UserError(f"--region {text!r}: width and height must be positive")
        return cls(left, top, width, height)
