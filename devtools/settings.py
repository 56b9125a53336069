"""Every service's settings in one object: what `make run`, the tests and benchmarks read.

Each service reads only its own class (`ApiSettings`, `SessionSettings`,
`InvalidatorSettings`); a tool that starts or wires all of them needs their union.
"""

from __future__ import annotations

from api.config import ApiSettings
from invalidator.config import InvalidatorSettings
from session_service.config import SessionSettings


class StackSettings(ApiSettings, SessionSettings, InvalidatorSettings):
    """The union of the three services' variables (no variable of its own)."""
