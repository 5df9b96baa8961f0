"""One rounding rule for the figures that `interp status`, `interp run`, the
dashboard page and the tests all show.

Python's own rounding (``round``, ``f"{x:.0f}"``) rounds a tie half to even;
the page's JavaScript (``Number.prototype.toFixed``) rounds it half away from
zero, so a share of 0.025 would read "2%" in `interp status` and "3%" on the page. Every
figure shared between them goes through :func:`round_half_up` here and through
``roundHalfUp`` in interpreter/static/dashboard.js, which do the same: the
exact value of the double (here ``Decimal(float)``, there ``toFixed``), a tie
rounded away from zero.

The rate every view shows (tokens per second) and the ages the commands read
(``30d``) are worked out here too, once.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal

from ..errors import InterpError


def round_half_up(x: float, digits: int = 0) -> str:
    """`x` with `digits` decimals, a tie rounded away from zero: what the page's
    ``x.toFixed(digits)`` shows for the same double."""
    exp = Decimal(1).scaleb(-digits)
    return str(Decimal(float(x)).quantize(exp, rounding=ROUND_HALF_UP))


def percent(share: float, digits: int = 0) -> str:
    """A share (0.25) as a percentage, without the sign: ``percent(0.025) == "3"``,
    as the page's ``pct`` shows it."""
    return round_half_up(100 * float(share), digits)


def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '45m', '90s', '2w' -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise InterpError(f"bad age {text!r}: use a number and a unit, like 30d, 12h, 45m, 90s")
    n = float(m.group(1))
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return dt.timedelta(seconds=n * unit)


def tokens_per_s(tokens: float, seconds: float | None, digits: int | None = 1) -> float | None:
    """Tokens over seconds, rounded to `digits` (None: not rounded); None when no
    time passed. The one rate `interp run`'s view, `interp status`'s series, the
    Prometheus gauge and `interp models check` show."""
    if not seconds or seconds <= 0:
        return None
    rate = float(tokens) / float(seconds)
    return rate if digits is None else round(rate, digits)


__all__ = ["parse_age", "percent", "round_half_up", "tokens_per_s"]
