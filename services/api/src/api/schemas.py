"""Request and response bodies. Requests forbid unknown fields (422, not silently ignored).

Names and emails are checked by rules the OpenAPI document states exactly (a `pattern` on
each): a client or a fuzzer that follows the document is never refused, and anything the
document refuses is refused here too (tests/unit/api/test_schemas.py checks both agree).
"""

from __future__ import annotations

import re
import sys
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

NAME_MAX: Final = 200
# Bidi embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069): they reorder how
# the text around a name is displayed ("Trojan Source"). Plain marks (LRM/RLM) stay allowed.
_BIDI_CONTROLS: Final = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
# Blank letters and symbols that render as nothing (Hangul fillers, the Braille blank...).
_BLANKS: Final = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x180E})


def _classify() -> tuple[frozenset[int], frozenset[int]]:
    """(refused, invisible) code points, in one pass over Unicode (about 0.2 s, once)."""
    refused: set[int] = set(range(0xD800, 0xE000))  # lone surrogates: not characters at all
    invisible: set[int] = set()
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        category = unicodedata.category(char)
        # Control (Cc) and line/paragraph separators (Zl, Zp) never belong in a name.
        if category in {"Cc", "Zl", "Zp"} or cp in _BIDI_CONTROLS:
            refused.add(cp)
        elif category == "Cf" or cp in _BLANKS or char.isspace():
            invisible.add(cp)  # format characters (zero-width, joiners, tags), blanks
    return frozenset(refused), frozenset(refused | invisible)


def _char_class(codepoints: Iterable[int]) -> str:
    """A regex character class body for these code points, as ranges: `\\uXXXX` escapes in
    the BMP (the same in Python and ECMAScript), the character itself above it."""
    points = sorted(codepoints)
    parts: list[str] = []
    start = previous = points[0]
    for cp in [*points[1:], -1]:
        if cp == previous + 1:
            previous = cp
            continue
        parts.append(_one(start) if start == previous else f"{_one(start)}-{_one(previous)}")
        start = previous = cp
    return "".join(parts)


def _one(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)


_REFUSED_SET, _INVISIBLE_SET = _classify()
NAME_PATTERN: Final = (
    f"^(?=[\\s\\S]*[^{_char_class(_INVISIBLE_SET)}])[^{_char_class(_REFUSED_SET)}]*$"
)
NAME_RULE: Final = (
    f"1 to {NAME_MAX} characters after NFC normalisation and trimming; no control, "
    "surrogate or line-separator code points and no bidi embedding, override or isolate "
    "controls (U+202A-U+202E, U+2066-U+2069); at least one character that is not "
    "whitespace, a format character or a blank filler. Joiners such as ZWJ and ZWNJ are "
    "allowed inside a name."
)


def clean_name(value: str) -> str:
    """The name as stored: NFC and trimmed, or `ValueError` saying which rule it breaks.

    Checked as sent (a control character is refused even at an end that trimming would
    drop), exactly as the documented pattern checks it."""
    for char in value:
        if ord(char) in _REFUSED_SET:
            raise ValueError(f"a name cannot contain U+{ord(char):04X}")
    value = unicodedata.normalize("NFC", value).strip()
    if all(ord(char) in _INVISIBLE_SET for char in value):
        raise ValueError("a name needs at least one visible character")
    if len(value) > NAME_MAX:
        raise ValueError(f"a name has at most {NAME_MAX} characters (after NFC normalisation)")
    return value


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# Special-use names (RFC 6761) are not mail domains: refused as top-level labels.
_SPECIAL_USE: Final = ("arpa", "invalid", "local", "localhost", "onion", "test")
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN: Final = (
    r"^(?=[^@]{1,64}@)(?=.{6,254}$)"  # a local part of at most 64, the whole of at most 254
    rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+"
    rf"(?!(?:{'|'.join(_any_case(name) for name in _SPECIAL_USE)})$)[A-Za-z]{{2,63}}$"
)
EMAIL_RULE: Final = (
    "an ASCII email address: a dot-atom local part of at most 64 characters, a domain of "
    "letter-digit-hyphen labels ending in an alphabetic top-level label that is not a "
    "special-use name (RFC 6761: " + ", ".join(f".{n}" for n in _SPECIAL_USE) + "); stored "
    "lower-cased"
)
_EMAIL: Final = re.compile(EMAIL_PATTERN)


def check_email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise ValueError(f"not an email address this service accepts: {EMAIL_RULE}")
    return value


Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        description=NAME_RULE,
        json_schema_extra={"pattern": NAME_PATTERN},
    ),
    AfterValidator(clean_name),
]
Email = Annotated[
    str,
    Field(max_length=254, description=EMAIL_RULE, json_schema_extra={"pattern": EMAIL_PATTERN}),
    AfterValidator(check_email),
]
Password = Annotated[str, Field(min_length=8, max_length=128)]


class _Request(BaseModel):
    # No global whitespace stripping: an email is checked exactly as the document says, a
    # password is kept as typed; names are trimmed by their own rule (`clean_name`).
    model_config = ConfigDict(extra="forbid")


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


class Login(_Request):
    email: Email
    password: str = Field(min_length=1, max_length=128)


class UserPublic(BaseModel):
    """A user as anyone sees it: `GET /v1/users/{id}` and the list."""

    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime


class UserOwn(UserPublic):
    """A user as the account itself sees it: `/v1/users/me` and its own writes' answers."""

    email: str


class LoginOut(BaseModel):
    user: UserOwn
    expires_at: datetime = Field(description="idle expiry: moves forward while the session is used")
    absolute_expires_at: datetime = Field(description="hard limit; the cookie expires then too")


class UserPage(BaseModel):
    items: list[UserPublic]
    page: int
    limit: int
    total: int


class NodeOut(BaseModel):
    """One server of a cluster or Sentinel deployment (`REDIS_MODE`)."""

    address: str
    role: Literal["primary", "replica", "sentinel"]
    reachable: bool
    latency_ms: float | None


class ComponentHealth(BaseModel):
    status: Literal["ok", "down", "open"]
    latency_ms: float | None
    error: str | None = None
    nodes: list[NodeOut] | None = Field(
        default=None, description="cluster or Sentinel: every node and whether it answers"
    )


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, ComponentHealth]
