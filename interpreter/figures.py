"""One rounding rule for the figures that `interp status`, `interp run`, the
dashboard page and the tests all show.

Python's own rounding (``round``, ``f"{x:.0f}"``) rounds a tie half to even;
the page's JavaScript (``Number.prototype.toFixed``) rounds it half away from
zero. A share of 0.025 read "2%" in `interp status` and "3%" on the page. Every
figure shared between them goes through :func:`round_half_up` here and through
``roundHalfUp`` in interpreter/static/dashboard.js, which do the same: the
exact value of the double (here ``Decimal(float)``, there ``toFixed``), a tie
rounded away from zero.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def round_half_up(x: float, digits: int = 0) -> str:
    """`x` with `digits` decimals, a tie rounded away from zero: what the page's
    ``x.toFixed(digits)`` shows for the same double."""
    exp = Decimal(1).scaleb(-digits)
    return str(Decimal(float(x)).quantize(exp, rounding=ROUND_HALF_UP))


def percent(share: float, digits: int = 0) -> str:
    """A share (0.25) as a percentage, without the sign: ``percent(0.025) == "3"``,
    as the page's ``pct`` shows it."""
    return round_half_up(100 * float(share), digits)


__all__ = ["percent", "round_half_up"]
