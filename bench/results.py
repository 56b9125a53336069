"""One machine-readable line per headline figure, for `bench/report.py`.

A benchmark prints its table for people, then calls `record(...)` for each figure it is
judged by: a `RESULT {json}` line carrying the figure, its baseline measured in the same run,
the ratio, and the target. `bench/report.py` runs every script and collects these lines.

A figure without a target (a cost the script only reports, such as `session_write.py`'s)
passes `target=None`: its `met` is null and it fails nothing. A figure without a baseline (a
breakdown, such as `write_hops.py`'s) passes `ratio=None` as well.
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
    ratio: float | None,
    target: str | None,
    unit: str = "",
) -> None:
    """Print the figure's line. `target` is `>= 0.9`, `< 2`…: the ratio it must meet; None
    when the figure has none (then `met` is None)."""
    met = None
    if target is not None:
        if ratio is None:
            raise ValueError(f"{script}: {figure!r} has a target but no ratio")
        sign, _, bound = target.partition(" ")
        met = _COMPARE[sign](ratio, float(bound))
    line = {
        "script": script,
        "figure": figure,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
    }
    print(PREFIX + json.dumps(line), flush=True)
