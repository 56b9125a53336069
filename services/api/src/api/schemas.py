"""Request and response bodies. Requests forbid unknown fields (422, not silently ignored)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

# Bidi embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069): they reorder how
# the text around a name is displayed ("Trojan Source"). Plain marks (LRM/RLM) stay allowed.
_BIDI_CONTROLS: Final = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
# Control (Cc), surrogate (Cs) and line/paragraph separators (Zl, Zp) never belong in a name.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
NAME_RULE: Final = (
    "NFC-normalised and trimmed; no control, surrogate or line-separator code points and no "
    "bidi embedding, override or isolate controls (U+202A-U+202E, U+2066-U+2069); at least "
    "one visible character (a letter, digit, punctuation or symbol). Joiners such as ZWJ and "
    "ZWNJ are allowed inside a name."
)


def clean_name(value: str) -> str:
    """The name as stored: NFC, trimmed, or `ValueError` saying which rule it breaks."""
    value = unicodedata.normalize("NFC", value).strip()
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES or ord(char) in _BIDI_CONTROLS:
            raise ValueError(f"a name cannot contain U+{ord(char):04X}")
    # Letters, numbers, punctuation, symbols (emoji are So): something a reader can see.
    if not any(unicodedata.category(char)[0] in "LNPS" for char in value):
        raise ValueError("a name needs at least one visible character")
    return value


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# email-validator (behind EmailStr) refuses special-use domains (RFC 6761: .test, .local,
# ...); the document says so with a pattern, so clients and fuzzers know the rule.
_SPECIAL_USE = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
EMAIL_PATTERN: Final = rf"^[^@]+@(?!(?:[^@]*\.)?(?:{_SPECIAL_USE})\.?$)[^@]+$"
EMAIL_RULE: Final = (
    "an email address; domains under special-use names (RFC 6761: "
    + ", ".join(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)
    + ") are refused"
)

Name = Annotated[
    str,
    Field(min_length=1, max_length=200, description=NAME_RULE),
    AfterValidator(clean_name),
]
Email = Annotated[
    EmailStr, Field(description=EMAIL_RULE, json_schema_extra={"pattern": EMAIL_PATTERN})
]
Password = Annotated[str, Field(min_length=8, max_length=128)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserCreate(_Request):
    email: Email
    name: Name
    password: Password


class UserUpdate(_Request):
    email: Email | None = None
    name: Name | None = None
    password: Password | None = None

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if self.email is None and self.name is None and self.password is None:
            raise ValueError("give at least one of email, name, password")
        return self


class UserPublic(BaseModel):
    """A user as anyone sees it: `GET /v1/users/{id}` and the list."""

    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime


class UserOwn(UserPublic):
    """A user as the account itself sees it: `/v1/users/me` and its own writes' answers."""

    email: str


class UserPage(BaseModel):
    items: list[UserPublic]
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
