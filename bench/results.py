"""One machine-readable line per headline figure, for `bench/report.py`.

A benchmark prints its table for people, then calls `record(...)` for each figure it is
judged by: a `RESULT {json}` line carrying the figure, its baseline measured in the same run,
the ratio, and the target. `bench/report.py` runs every script and collects these lines.
"""

from __future__ import annotations

import json
import operator
from typing import Final

PREFIX: Final = "RESULT "
_COMPARE: Final = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


def record(
    script: str,
    *,
    figure: str,
    value: float,
    baseline: str,
    ratio: float,
    target: str,
    unit: str = "",
) -> None:
    """Print the figure's line. `target` is `>= 0.9`, `< 2`…: the ratio it must meet."""
    sign, _, bound = target.partition(" ")
    met = _COMPARE[sign](ratio, float(bound))
    line = {
        "script": script,
        "figure": figure,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "ratio": round(ratio, 3),
        "target": target,
        "met": met,
    }
    print(PREFIX + json.dumps(line), flush=True)
