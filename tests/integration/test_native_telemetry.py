"""FastAPI's own OpenTelemetry support stays off in every service: the spans are ours
(`shared.tracing.ServerSpans`), and with a global tracer provider set (by an agent or another
library) FastAPI would otherwise add a second span to every request."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())

from api.main import create_app as api_app
from invalidator.main import create_app as invalidator_app
from session_service.main import create_app as session_app


def traces_itself(app: FastAPI) -> bool:
    # The check FastAPI.__call__ makes before anything else on every request (private: if
    # FastAPI renames it, this probe fails loudly and the setting needs a look again).
    return bool(app._native_telemetry.enabled())


counts = {name: traces_itself(make()) for name, make in
          (("api", api_app), ("invalidator", invalidator_app), ("session", session_app))}
counts["plain FastAPI"] = traces_itself(FastAPI())
print(json.dumps(counts))
"""


def test_no_service_lets_fastapi_trace_on_its_own() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "APP_ENV": "test",
        "REDIS_URL": "redis://127.0.0.1:9/0",  # never reached: no lifespan runs
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "SERVICE_TOKEN": "t" * 32,
        "SESSION_SERVICE_URL": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["plain FastAPI"] is True  # a global provider turns FastAPI's own tracing on
    assert (counts["api"], counts["invalidator"], counts["session"]) == (False, False, False)
