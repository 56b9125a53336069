"""Request and response bodies. Requests forbid unknown fields (422, not silently ignored)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

# No control characters: PostgreSQL refuses NUL in text, and none belongs in a name.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
Password = Field(min_length=8, max_length=128)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserCreate(_Request):
    email: EmailStr
    name: str = Name
    password: str = Password


class UserUpdate(_Request):
    email: EmailStr | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PRINTABLE)
    password: str | None = Field(default=None, min_length=8, max_length=128)

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if self.email is None and self.name is None and self.password is None:
            raise ValueError("give at least one of email, name, password")
        return self


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    page: int
    limit: int
    total: int


class ComponentHealth(BaseModel):
    status: Literal["ok", "down", "open"]
    latency_ms: float | None
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, ComponentHealth]
