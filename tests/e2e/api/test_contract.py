"""The published contracts match the behaviour: schemathesis with every check, stateful
phase included, against both services as processes, and an OpenAPI validator on both
documents.

schemathesis runs as its CLI (`st run`), the way a user would point it at the services; a
non-zero exit is a failure and its report is shown. The api is fuzzed signed in (a session
cookie), the session service with its bearer token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.e2e.auth.conftest import Stack, StackFactory, make_stack, start_session
from tests.e2e.session.processes import TOKEN

__all__ = ["make_stack", "start_session"]
BIN = Path(sys.executable).parent
# Bounded: examples per operation per phase, and a time budget for the stateful phase.
MAX_EXAMPLES = 30
PHASES = "examples,coverage,fuzzing,stateful"


def schemathesis(url: str, *headers: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "st"), "run", f"{url}/openapi.json",
        "--checks", "all",
        "--phases", PHASES,
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1",
        "--request-timeout", "10",
        "--no-color",
        *[arg for header in headers for arg in ("-H", header)],
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path)}
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def signed_in_cookie(stack: Stack) -> str:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Fuzz", "password": "fuzz-pass-1"}
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        assert client.post("/v1/auth/register", json=body).status_code == 201
        login = client.post("/v1/auth/login", json={k: body[k] for k in ("email", "password")})
        assert login.status_code == 200
        return str(login.cookies["session"])


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    # The limiter would answer most examples with 429 and hide the handlers.
    return make_stack(RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING")


def test_both_documents_are_valid_openapi(stack: Stack) -> None:
    for url, headers in (
        (stack.api.url, {}),
        (stack.session.url, {"Authorization": f"Bearer {TOKEN}"}),
    ):
        document = httpx.get(f"{url}/openapi.json", headers=headers, timeout=10).json()
        validate(document)


def test_the_api_behaves_as_its_document_says(stack: Stack, tmp_path: Path) -> None:
    cookie = signed_in_cookie(stack)
    done = schemathesis(stack.api.url, f"Cookie: session={cookie}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]


def test_the_session_service_behaves_as_its_document_says(stack: Stack, tmp_path: Path) -> None:
    done = schemathesis(stack.session.url, f"Authorization: Bearer {TOKEN}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
