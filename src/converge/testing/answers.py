"""Comparing answers as `converge predict` and `converge serve` write them (JSON)."""

from __future__ import annotations

from typing import Any


def same_answers(a: Any, b: Any, tolerance: float = 1e-4) -> bool:
    """Equal JSON answers, numbers up to a relative `tolerance`: a batch may sum in another order.

    Example::

        assert same_answers(served["answers"], [json.loads(line) for line in predicted])
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answers(a[key], b[key], tolerance) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_answers(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))
    return a == b
