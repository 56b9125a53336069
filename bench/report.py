"""`make bench`: every benchmark in short mode, then one report — bench/report.md and a chart
of the ratios against their targets (bench/report.png).

Each script prints its own table and `RESULT {json}` lines (`bench/results.py`) for the
figures it is judged by; this collects those lines into one table (figure, baseline measured
in the same run, ratio, target, met or not). A script that fails, or prints no RESULT, is
listed as such: the report never hides a benchmark that did not run. Short mode keeps the
whole run to a few minutes on a 2-core machine: compare ratios, not absolute figures.

    .venv/bin/python bench/report.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = str(Path(sys.executable))
# Each script in its short mode; `limits` (a peer, kept out of the lock) is added by uv.
SHORT: Final[dict[str, list[str]]] = {
    "cache_get": [PYTHON, "bench/cache_get.py", "--ops", "15000"],
    "limiter": [
        "uv", "run", "--no-sync", "--with", "limits>=5,<6", "python", "bench/limiter.py",
        "--checks", "4000", "--chunks", "6",
    ],
    "api_read": [PYTHON, "bench/api_read.py", "--seconds", "2", "--rounds", "2"],
    "api_degraded": [PYTHON, "bench/api_degraded.py", "--requests", "300", "--rounds", "2"],
    "invalidator_drain": [
        PYTHON, "bench/invalidator_drain.py", "--events", "20000", "--rounds", "2",
    ],
    "invalidator_lag": [PYTHON, "bench/invalidator_lag.py", "--rate", "500", "--seconds", "2"],
    "session_validate": [
        PYTHON, "bench/session_validate.py", "--ops", "8000", "--http-ops", "1000",
    ],
    "write_visible": [PYTHON, "bench/write_visible.py", "--writes", "150"],
    "cluster_hotpath": [PYTHON, "bench/cluster_hotpath.py", "--ops", "8000", "--rounds", "2"],
}  # fmt: skip
PREFIX: Final = "RESULT "


@dataclass
class Run:
    name: str
    seconds: float
    code: int
    results: list[dict[str, Any]] = field(default_factory=list)
    tail: str = ""


def run(name: str, command: list[str]) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr[-3000:])
    results = [
        json.loads(line[len(PREFIX) :])
        for line in done.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
    return Run(name, time.monotonic() - started, done.returncode, results, tail[0] if tail else "")


def report(runs: list[Run], load: str) -> str:
    lines = [
        "# Benchmark report",
        "",
        f"One `make bench` run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
        f"before the run: {load}). Every ratio is against a baseline measured in the same run; "
        "short mode (fewer operations than the scripts' defaults): compare ratios, not "
        "absolute figures. The chart: [report.png](report.png).",
        "",
        "| script | figure | value | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in runs:
        if item.code != 0 or not item.results:
            why = f"exit {item.code}" if item.code else "no RESULT line"
            lines.append(f"| `{item.name}.py` | did not run: {why} ({item.tail}) | | | | | no |")
            continue
        for r in item.results:
            value = f"{r['value']:g} {r['unit']}".strip()
            met = "yes" if r["met"] else "**no**"
            lines.append(
                f"| `{item.name}.py` | {r['figure']} | {value} | {r['baseline']} | "
                f"{r['ratio']:.2f}× | {r['target']} | {met} |"
            )
    total = sum(item.seconds for item in runs)
    lines += [
        "",
        f"Run time: {total:.0f} s in all; "
        + ", ".join(f"{i.name} {i.seconds:.0f} s" for i in runs)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def chart(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{item.name}: {r['figure']}", r) for item in runs for r in item.results]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    for i, (_, r) in enumerate(rows):
        bound = float(r["target"].split()[1])
        ax.barh(i, r["ratio"], color="#3b7d3b" if r["met"] else "#b03a2e")
        ax.plot([bound, bound], [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the baseline of the same run (log); black mark: the target")
    ax.set_title("bench/report.md: ratios against their targets (green: met)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SHORT), help="a subset of scripts")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    runs = []
    for name in args.only or SHORT:
        print(f"+ {name}", flush=True)
        runs.append(run(name, SHORT[name]))
    (BENCH / "report.md").write_text(report(runs, load))
    chart(runs, BENCH / "report.png")
    print(f"wrote {BENCH / 'report.md'} and {BENCH / 'report.png'}")
    return (
        0
        if all(i.code == 0 and i.results and all(r["met"] for r in i.results) for i in runs)
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
