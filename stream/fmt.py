"""Numbers for people: durations, rates, counts and sizes as `top`'s tables and `report`'s plot axes print
them ("-" for a value that is not known)."""
from __future__ import annotations

import math


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if s < limit:
            return f"{s / div:.1f} {unit}"
    return f"{s / 86400:.1f} d"


def fmt_rate(r: float | None) -> str:
    return "-" if r is None else f"{r:,.1f}"


def fmt_count(c: float | None) -> str:
    return "-" if c is None else f"{c:,.0f}"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"
