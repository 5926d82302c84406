"""A sequential heat palette (light yellow -> dark red) shared by the terminal and HTML views."""

from __future__ import annotations

_STOPS = [  # ColorBrewer YlOrRd
    (255, 255, 204),
    (255, 237, 160),
    (254, 217, 118),
    (254, 178, 76),
    (253, 141, 60),
    (252, 78, 42),
    (227, 26, 28),
    (177, 0, 38),
]


def heat_rgb(value: float) -> tuple[int, int, int]:
    """Colour for ``value`` in [0, 1] (clamped), interpolated between the palette stops."""
    value = min(1.0, max(0.0, value)) * (len(_STOPS) - 1)
    low = min(int(value), len(_STOPS) - 2)
    frac = value - low
    a, b = _STOPS[low], _STOPS[low + 1]
    r, g, bl = (round(x + (y - x) * frac) for x, y in zip(a, b, strict=True))
    return r, g, bl


def heat_hex(value: float) -> str:
    return "#{:02x}{:02x}{:02x}".format(*heat_rgb(value))


def ink_for(value: float) -> str:
    """Black or white text, whichever reads better on ``heat_hex(value)``."""
    r, g, b = heat_rgb(value)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"
