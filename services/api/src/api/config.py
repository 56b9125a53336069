"""The api's settings: the shared `Settings`, read once in the factory."""

from __future__ import annotations

from shared.settings import Settings, load_settings

SERVICE_NAME = "api"

__all__ = ["SERVICE_NAME", "Settings", "get_settings"]


def get_settings() -> Settings:
    """The environment's settings; `SettingsError` names any bad variable."""
    return load_settings()
