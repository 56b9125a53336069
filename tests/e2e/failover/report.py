"""The figures of one failover run: per kind of request, the time from the kill to its first
success, the end of its errors, and its errors by status or exception; written as JSON and
printed as a table (`pytest -s` shows it)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.failover.load import KINDS, PACE, Load, Outcome


@dataclass
class Run:
    topology: str
    killed: str  # what was killed: the node's address and why it
    load: Load
    started: float  # the event loop's clock at the load's start
    killed_at: float = 0.0
    promoted_at: float = 0.0  # when the topology tool saw the replica promoted
    stopped_at: float = 0.0
    on_victim: Callable[[str], bool] | None = None  # cluster: the user's slot was the victim's
    extra: dict[str, Any] = field(default_factory=dict)

    def _since_kill(self, moment: float) -> float:
        return round(moment - self.killed_at, 3)

    def kind(self, kind: str) -> dict[str, Any]:
        mine = [o for o in self.load.outcomes if o.kind == kind]
        # Answered before the kill / at or after it (a request in flight at the kill is after).
        before = [o for o in mine if o.ended < self.killed_at]
        after = [o for o in mine if o.ended >= self.killed_at]
        # Recovery is shown by requests sent after the kill only.
        sent_after = [o for o in mine if o.started >= self.killed_at]
        figures: dict[str, Any] = {
            "requests": len(mine),
            "before_kill": {"requests": len(before), "errors": _labels(before)},
            "after_kill": {"requests": len(after), "errors": _labels(after)},
            "first_success_s": self._first_success(sent_after),
            "last_error_s": self._last_error(mine),
            "without_rate_headers": sum(1 for o in mine if not o.rate_headers),
            # Seconds per answer, successes only: before the kill, and from it to the end.
            "latency_before_kill": _latency([o for o in before if o.ok]),
            "latency_after_kill": _latency([o for o in after if o.ok]),
        }
        if self.on_victim is not None:
            on = [o for o in sent_after if o.user is not None and self.on_victim(o.user)]
            figures["victim_shard"] = {
                "requests": len(on),
                "first_success_s": self._first_success(on),
                "errors": _labels(on),
            }
        return figures

    def _first_success(self, outcomes: list[Outcome]) -> float | None:
        ended = [o.ended for o in outcomes if o.ok]
        return self._since_kill(min(ended)) if ended else None

    def _last_error(self, outcomes: list[Outcome]) -> float | None:
        ended = [o.ended for o in outcomes if not o.ok and o.ended >= self.killed_at]
        return self._since_kill(max(ended)) if ended else None

    def summary(self) -> dict[str, Any]:
        return {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "topology": self.topology,
            "killed": self.killed,
            "load": {
                "workers": {"read": 2, **{k: 1 for k in KINDS if k != "read"}},
                "pause_between_requests_s": PACE,
                "accounts": len(self.load.accounts),
                "seconds_before_kill": round(self.killed_at - self.started, 3),
                "seconds_after_kill": round(self.stopped_at - self.killed_at, 3),
                "requests": len(self.load.outcomes),
            },
            "promotion_seen_s": self._since_kill(self.promoted_at),
            "kinds": {kind: self.kind(kind) for kind in KINDS},
            "acknowledged_logins": len(self.load.sessions),
            "acknowledged_logins_after_kill": sum(
                1 for s in self.load.sessions if s.at >= self.killed_at
            ),
            **self.extra,
        }

    def write(self, path: Path) -> dict[str, Any]:
        """The summary as JSON at `path`, and as a table on stdout (`pytest -s`)."""
        summary = self.summary()
        path.write_text(json.dumps(summary, indent=2, sort_keys=True))
        lines = [
            "",
            f"failover summary ({self.topology}): {path}",
            f"killed {self.killed}; promotion seen {summary['promotion_seen_s']} s after",
            f"{'kind':8} {'reqs':>5} {'after':>5} {'first ok':>9} {'last err':>9} {'no RL':>5} "
            f"{'p50/max ok before':>18} {'after':>14}  errors answered after the kill",
        ]
        for kind, row in summary["kinds"].items():
            after = row["after_kill"]
            errors = ", ".join(f"{k} x{v}" for k, v in after["errors"].items()) or "-"
            lines.append(
                f"{kind:8} {row['requests']:>5} {after['requests']:>5} "
                f"{_s(row['first_success_s']):>9} {_s(row['last_error_s']):>9} "
                f"{row['without_rate_headers']:>5} {_l(row['latency_before_kill']):>18} "
                f"{_l(row['latency_after_kill']):>14}  {errors}"
            )
            if "victim_shard" in row:
                shard = row["victim_shard"]
                lines.append(
                    f"{'':8} victim shard: {shard['requests']} after the kill, first ok "
                    f"{_s(shard['first_success_s'])}, errors {shard['errors'] or '-'}"
                )
        lines += [f"{name}: {value}" for name, value in self.extra.items()]
        text = "\n".join(lines) + "\n"
        path.with_suffix(".txt").write_text(text)
        sys.stdout.write(text)
        return summary


def _latency(outcomes: list[Outcome]) -> dict[str, float] | None:
    took = sorted(o.ended - o.started for o in outcomes)
    if not took:
        return None
    return {"p50": round(took[len(took) // 2], 4), "max": round(took[-1], 4)}


def _labels(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(Counter(o.label for o in outcomes if not o.ok).most_common())


def _l(latency: dict[str, float] | None) -> str:
    return "-" if latency is None else f"{latency['p50'] * 1000:.0f}/{latency['max'] * 1000:.0f}ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"
