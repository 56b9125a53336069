"""`make bench`: every benchmark in short mode, then one report — bench/report.md and a chart
of the ratios against their targets (bench/report.png).

Each script prints its own table and `RESULT {json}` lines (`bench/results.py`) for the
figures it is judged by; this collects those lines into one table (figure, baseline measured
in the same run, ratio, target, met or not). A script that fails, or prints no RESULT, is
listed as such: the report never hides a benchmark that did not run. Short mode keeps the
whole run to a few minutes on a 2-core machine: compare ratios, not absolute figures.

Every script runs under a time limit of its own (`timeout(1)`: SIGINT to its process group,
so a script can stop its servers on the way out, then SIGKILL to the group 20 s later — a
loop of redis-py calls may never see the SIGINT, as redis-py's async client can swallow the
task's cancellation; the private redis-servers die with their parent), and the whole run
under `--budget` (default 600 s): a script that would start with too little of it left is
listed as skipped.
Each script starts its own servers on 127.0.0.1; `REDIS_URL` is not passed on, so none of
them reaches a server named by the caller's environment.

    .venv/bin/python bench/report.py [--only NAME ...] [--budget 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = str(Path(sys.executable))
# uv as the Makefile finds it: on PATH, else the copy `make uv` put in .tools/.
UV = shutil.which("uv") or str(Path(__file__).resolve().parent.parent / ".tools" / "bin" / "uv")
# Each script in its short mode; `limits` (a peer, kept out of the lock) is added by uv.
# Every script in bench/ but bare_app.py and inprocess.py (api_read.py's baseline server and
# its in-process child, nothing by themselves).
SHORT: Final[dict[str, list[str]]] = {
    "cache_get": [PYTHON, "bench/cache_get.py", "--ops", "15000"],
    "limiter": [
        UV, "run", "--no-sync", "--with", "limits>=5,<6", "python", "bench/limiter.py",
        "--checks", "4000", "--chunks", "6",
    ],
    "api_read": [PYTHON, "bench/api_read.py", "--seconds", "3", "--rounds", "4", "--cluster"],
    "api_degraded": [PYTHON, "bench/api_degraded.py", "--requests", "300", "--rounds", "2"],
    "invalidator_drain": [
        PYTHON, "bench/invalidator_drain.py", "--events", "20000", "--rounds", "5", "--cluster",
    ],
    "invalidator_lag": [PYTHON, "bench/invalidator_lag.py", "--rate", "500", "--seconds", "2"],
    "session_validate": [
        PYTHON, "bench/session_validate.py", "--ops", "8000", "--http-ops", "1000",
    ],
    "write_visible": [PYTHON, "bench/write_visible.py", "--writes", "500"],
    "cluster_hotpath": [PYTHON, "bench/cluster_hotpath.py", "--ops", "8000", "--rounds", "2"],
    "session_write": [PYTHON, "bench/session_write.py", "--ops", "1000", "--chunk", "100"],
    "write_hops": [PYTHON, "bench/write_hops.py", "--writes", "20"],
}  # fmt: skip
# Seconds each may take in short mode. Measured one by one on a 2-core machine with other
# work on it (load 1-2.5): 3-140 s each, about 4-5 minutes in all (api_read the longest: its
# round-by-round ratios swing by 0.2 on 2 cores, so it gets 4 rounds of 3 s); the
# limits leave three times that or more (uv's first fetch of `limits` included).
LIMIT: Final[dict[str, int]] = {
    "cache_get": 60, "limiter": 120, "api_read": 300, "api_degraded": 120,
    "invalidator_drain": 240, "invalidator_lag": 60, "session_validate": 60,
    "write_visible": 180, "cluster_hotpath": 90, "session_write": 90, "write_hops": 120,
}  # fmt: skip
GRACE: Final = 20  # seconds between the SIGINT at the limit and the SIGKILL
SHORTEST: Final = 30  # seconds: with less of the budget left a script is skipped
PREFIX: Final = "RESULT "
TIMED_OUT: Final = 124  # timeout(1): the command ran past its limit (and ended on SIGINT)
# ... and was SIGKILLed `GRACE` seconds later: timeout(1) with it (it signals its own group).
KILLED: Final = frozenset({-9, 128 + 9})
SKIPPED: Final = -1  # not started: too little of the run's budget left


@dataclass
class Run:
    name: str
    seconds: float
    code: int
    results: list[dict[str, Any]] = field(default_factory=list)
    tail: str = ""


def run(name: str, command: list[str], limit: float) -> Run:
    """`command` under `timeout(1)`: SIGINT to its process group at `limit`, SIGKILL `GRACE`
    seconds later; `subprocess.run`'s own timeout is only the backstop."""
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    bounded = ["timeout", "--signal=INT", f"--kill-after={GRACE}", f"{limit:.0f}", *command]
    done = subprocess.run(
        bounded, cwd=ROOT, capture_output=True, text=True, timeout=limit + GRACE + 30,
        check=False, env={**env, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr[-3000:])
    results = [
        json.loads(line[len(PREFIX) :])
        for line in done.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
    why = tail[0] if tail else ""
    seconds = time.monotonic() - started
    if (done.returncode == TIMED_OUT or done.returncode in KILLED) and seconds >= limit:
        why = f"stopped at its limit of {limit:.0f} s"
    return Run(name, seconds, done.returncode, results, why)


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
        if item.code == SKIPPED:
            lines.append(f"| `{item.name}.py` | did not run: {item.tail} | | | | | no |")
            continue
        if item.code != 0 or not item.results:
            why = f"exit {item.code}" if item.code else "no RESULT line"
            lines.append(f"| `{item.name}.py` | did not run: {why} ({item.tail}) | | | | | no |")
            continue
        for r in item.results:
            value = f"{r['value']:g} {r['unit']}".strip()
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
            target = r["target"] or "none"
            met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
            lines.append(
                f"| `{item.name}.py` | {r['figure']} | {value} | {r['baseline']} | "
                f"{ratio} | {target} | {met} |"
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

    # A figure without a ratio (a breakdown) has nothing to draw; one without a target is grey.
    rows = [
        (f"{item.name}: {r['figure']}", r)
        for item in runs
        for r in item.results
        if r["ratio"] is not None
    ]
    if not rows:
        return
    colours = {True: "#3b7d3b", False: "#b03a2e", None: "#999999"}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    for i, (_, r) in enumerate(rows):
        ax.barh(i, r["ratio"], color=colours[r["met"]])
        if r["target"] is not None:
            bound = float(r["target"].split()[1])
            ax.plot([bound, bound], [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the baseline of the same run (log); black mark: the target")
    fig.suptitle(
        "bench/report.md: ratios against their targets (green: met, red: missed, grey: no target)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SHORT), help="a subset of scripts")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole run")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    runs = []
    deadline = time.monotonic() + args.budget
    for name in args.only or SHORT:
        left = deadline - time.monotonic()
        if left < SHORTEST:
            print(f"+ {name}: skipped, {max(left, 0):.0f} s of the budget left", flush=True)
            why = f"skipped, the run's budget of {args.budget:.0f} s was spent"
            runs.append(Run(name, 0.0, SKIPPED, tail=why))
            continue
        print(f"+ {name}", flush=True)
        runs.append(run(name, SHORT[name], min(LIMIT[name], left)))
    (BENCH / "report.md").write_text(report(runs, load))
    chart(runs, BENCH / "report.png")
    print(f"wrote {BENCH / 'report.md'} and {BENCH / 'report.png'}")
    # A figure without a target (met is None) fails nothing; a script without a figure does.
    return (
        0
        if all(
            i.code == 0 and i.results and all(r["met"] is not False for r in i.results)
            for i in runs
        )
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
