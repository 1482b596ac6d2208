"""Checks of one value, called by the constructor that takes it (or, for the run's own keys, by
`validation.check_config`): each returns the value or raises a ValueError of one line,
"<key>=<value> must be <what is allowed>", which the run reports as a bad config (exit 2).

A value has one check, where it is used: a policy's `eta` in the policy, a model's `width` in its
builder, a schedule's `end_samples` in the schedule.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def refuse(key: str, value: Any, allowed: str, why: str = "") -> None:
    raise ValueError(f"{key}={value} must be {allowed}{': ' + why if why else ''}")


def integer(key: str, value: Any, minimum: int | None = None, maximum: int | None = None, why: str = "") -> int:
    """An integer (not a bool) from `minimum` to `maximum` (None: unbounded)."""
    if not is_integer(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            refuse(key, value, f"an integer from {minimum} to {maximum}", why)
        refuse(key, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""), why)
    return value


def optional_integer(key: str, value: Any, minimum: int, meaning: str) -> int | None:
    """None (meaning `meaning`) or an integer >= `minimum`."""
    if value is not None and (not is_integer(value) or value < minimum):
        refuse(key, value, f"an integer >= {minimum}, or null ({meaning})")
    return value


def number(key: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, unit: str = "", why: str = "") -> float:
    """A finite number (not a bool) in the interval from `low` to `high` (None: unbounded above)."""
    if is_number(value):
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if above and below:
            return value
    what = f"a number{' of ' + unit if unit else ''}"
    if high is None:
        refuse(key, value, f"{what} {'>' if low_open else '>='} {low:g}", why)
    refuse(key, value, f"{what} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", why)


def positive(key: str, value: Any, why: str = "") -> float:
    return number(key, value, 0, low_open=True, why=why)


def fraction(key: str, value: Any) -> float:
    """A number in [0, 1): a momentum, a dropout probability, a moving average's weight of the past."""
    return number(key, value, 0, 1, high_open=True)


def switch(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        refuse(key, value, "true or false")
    return value


def one_of(key: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is unknown; choose one of {', '.join(allowed)}")
    return value


def increasing_integers(key: str, value: Any, minimum: int, strictly: bool, allowed: str = "") -> list[int]:
    """A list of integers >= `minimum`, strictly increasing or non-decreasing."""
    ordered = isinstance(value, (list, tuple)) and all(is_integer(x) and x >= minimum for x in value) and all(
        a < b if strictly else a <= b for a, b in zip(value, value[1:]))
    if not ordered:
        order = "strictly increasing" if strictly else "non-decreasing"
        refuse(key, list(value) if isinstance(value, tuple) else value,
               allowed or f"a list of {order} integers >= {minimum}")
    return list(value)
