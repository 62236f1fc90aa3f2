"""Checks of the numbers a user gives, shared by every front end (CLI, web, library).

Each raises OnewordError naming the option or field and the range it takes, so a command line
and a JSON body are refused with the same one line.
"""

from __future__ import annotations

import math

from .errors import OnewordError

# SQLite stores integers in 64 signed bits: ids of runs, candidates and images live in 1..this.
MAX_ID = 2**63 - 1
# Seeds are stored in the store too; torch.Generator takes them in 64 bits.
MAX_SEED = 2**63 - 1
RATINGS = (0, 5)  # a rating: 1 (worst) to 5 (best); 0 clears it


def parse_id(text: str | int, what: str, prefix: str = "") -> int | None:
    """The id in '7' or '<prefix>7' (e.g. 'r7'), None if `text` is not of that form; refuses
    an id outside the store's integer range, naming `what` (e.g. 'run r99999...')."""
    raw = str(text).strip()
    digits = raw[1:] if prefix and raw[:1].lower() == prefix.lower() else raw
    if not digits.isascii() or not digits.isdigit():
        return None
    return store_id(int(digits), what)


def store_id(value: int, what: str) -> int:
    """`value` if it can be an id of the store (1 to 2**63 - 1), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise OnewordError(f"{what} {value}: not an id of this store; ids run from 1 to {MAX_ID}")
    return value


def seed_range(seed: int, option: str = "--seed", count: int = 1) -> int:
    """`seed` if seed .. seed + count - 1 are all seeds a generator and the store take."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OnewordError(f"{option} {seed}: give a whole number from 0 to {MAX_SEED}")
    if seed + count - 1 > MAX_SEED:
        top = MAX_SEED - count + 1
        raise OnewordError(
            f"{option} {seed}: seeds {seed} to {seed + count - 1} would be used, beyond "
            f"{MAX_SEED}; give a seed from 0 to {top}"
        )
    return seed


def finite(value: float, option: str, low: float | None = None, high: float | None = None):
    """`value` if it is a finite number within [low, high] (either bound may be None)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return value
    if low is not None and high is not None:
        wanted = f"a number from {low:g} to {high:g}"
    elif low is not None:
        wanted = f"a number of {low:g} or more"
    elif high is not None:
        wanted = f"a number of {high:g} or less"
    else:
        wanted = "a finite number"
    raise OnewordError(f"{option} {value}: give {wanted}")


def at_least(value: int, option: str, low: int) -> int:
    """`value` if it is a whole number of `low` or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OnewordError(f"{option} {value}: must be {low} or more")
    return value


def rating(value: int, option: str = "rating") -> int:
    """`value` if it is a whole rating in RATINGS (0 clears a rating)."""
    low, high = RATINGS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OnewordError(
            f"{option} {value}: give a whole number from {low + 1} (worst) to {high} (best), "
            f"or {low} to clear it"
        )
    return value
