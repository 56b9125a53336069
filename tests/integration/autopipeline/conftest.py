"""Every test here runs on both event loops: the stdlib's and uvloop, which the services run
on (uvicorn[standard]). The auto-pipeline drives its connection's transport itself, so both
loops' transports are shown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    del config, item
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
