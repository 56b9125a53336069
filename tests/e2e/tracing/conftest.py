"""The three services as processes exporting their spans to an OTLP receiver in the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.otlp import OtlpReceiver
from tests.e2e.auth.conftest import api_env, make_stack, start_api, start_session
from tests.e2e.invalidator.conftest import start_invalidator

__all__ = ["api_env", "make_stack", "receiver", "start_api", "start_invalidator", "start_session"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running
