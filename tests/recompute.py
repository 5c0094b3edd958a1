"""What a reviewer does with a printed table: divide two printed medians and look for the quotient
in the printed interval, allowing only for the rounding of what is printed."""

from __future__ import annotations

import re
from typing import Tuple

NUMBER = r"-?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"({NUMBER})x?\s*\[({NUMBER}), ({NUMBER})\]")


def printed(text: str) -> Tuple[float, float]:
    """A printed number and half a unit of its last digit (what rounding may have moved it)."""
    decimals = len(text.partition(".")[2])
    return float(text), 0.5 * 10.0**-decimals


def first_number(cell: str) -> str:
    """The first number printed in a cell (a median before its interval)."""
    return re.search(NUMBER, cell).group(0)


def interval(cell: str) -> Tuple[str, str, str]:
    """The printed speed-up and its ends, ``1.23x [1.10, 1.41]`` -> the three numbers as printed."""
    found = INTERVAL.search(cell)
    assert found, f"no interval in {cell!r}"
    return found.group(1), found.group(2), found.group(3)


def assert_recomputes(numerator: str, denominator: str, speedup_cell: str) -> None:
    """The printed numerator / denominator lands in the printed interval and on the printed
    speed-up, up to the rounding of the printed digits."""
    (n, dn), (d, dd) = printed(numerator), printed(denominator)
    quotients = ((n - dn) / (d + dd), (n + dn) / (d - dd))
    ratio, low, high = (printed(x) for x in interval(speedup_cell))
    assert quotients[1] >= low[0] - low[1] and quotients[0] <= high[0] + high[1], (
        f"{numerator} / {denominator} = {n / d:.4f} lies outside {speedup_cell!r}"
    )
    assert quotients[0] - ratio[1] <= ratio[0] <= quotients[1] + ratio[1], (
        f"{numerator} / {denominator} = {n / d:.4f} is not the printed speed-up {speedup_cell!r}"
    )
