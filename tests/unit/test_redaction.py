"""What `make run` and `platformctl` may print: URL passwords, tokens and session ids hidden;
the `.devstack/env` file they share read back exactly as written."""

from __future__ import annotations

import io
import os
import stat
import uuid
from pathlib import Path

import pytest

from devtools.output import Console
from shared import devstack
from shared.sessionids import new_session_id
from shared.settings import redact_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:p@ss@h:1/0 down", "redis://:***@h:1/0 down"),
        ("redis://u:pa/ss@h/0", "redis://u:***@h/0"),
        ("unix:///run/r.sock?db=0&password=s3cret", "unix:///run/r.sock?db=0&password=***"),
        (
            "a redis://u:x1@h/0,postgresql://u:y2@db/1 b",
            "a redis://u:***@h/0,postgresql://u:***@db/1 b",
        ),
        ("Redis at 127.0.0.1:6379 refused", "Redis at 127.0.0.1:6379 refused"),
    ],
)
def test_redact_url_hides_the_whole_password(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_the_console_hides_known_secrets_bearer_tokens_and_session_ids() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    token, session = "tok-" + "x" * 40, new_session_id(uuid.uuid4())
    console.hide(token, "p%40ss-word", None, "abc")  # "abc": too short to hide anywhere
    console.say(f"token={token} abc")
    console.say("decoded p@ss-word and encoded p%40ss-word")
    console.say("Authorization: Bearer abc.def-ghi")
    console.say(f"cookie session={session}; {{'session_id': '{session}'}}")
    console.error("Redis at redis://u:pw@h:1/0 did not answer")
    shown = out.getvalue()
    assert token not in shown
    assert "p@ss-word" not in shown
    assert "p%40ss-word" not in shown
    assert "abc.def-ghi" not in shown
    assert session not in shown
    assert "token=*** abc" in shown
    assert err.getvalue() == "error: Redis at redis://u:***@h:1/0 did not answer\n"


def test_the_stack_file_is_private_and_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "env"
    odd = "redis://:it's a \\ #secret@h:1/0"
    devstack.write(path, {"REDIS_URL": odd, "KEY_PREFIX": "p1", "API_PORT": "8123"}, os.getpid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = devstack.read(path)
    assert found is not None
    assert found.values == {"REDIS_URL": odd, "KEY_PREFIX": "p1", "API_PORT": "8123"}
    assert (found.pid, found.alive) == (os.getpid(), True)

    devstack.remove(path, os.getpid() + 1)  # another launcher's: stays
    assert path.exists()
    devstack.remove(path, os.getpid())
    assert not path.exists()
