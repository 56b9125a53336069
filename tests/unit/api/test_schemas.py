"""Request bodies: unknown fields, empty patches and control characters are refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api.schemas import EMAIL_PATTERN, UserCreate, UserUpdate


def test_create_accepts_a_valid_body_and_trims_the_name() -> None:
    body = UserCreate.model_validate(
        {"email": "a@example.com", "name": "  Ada  ", "password": "password1"}
    )
    assert body.name == "Ada"


@pytest.mark.parametrize(
    "data",
    [
        {"email": "a@example.com", "name": "Ada", "password": "password1", "role": "admin"},
        {"email": "a@example.com", "name": "Ada"},
        {"email": "nope", "name": "Ada", "password": "password1"},
        {"email": "a@example.com", "name": "A\x00", "password": "password1"},
        {"email": "a@example.com", "name": "x" * 201, "password": "password1"},
        {"email": "a@example.com", "name": "Ada", "password": "short"},
    ],
)
def test_create_refuses(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UserCreate.model_validate(data)


@pytest.mark.parametrize("data", [{}, {"name": None}, {"nickname": "x"}, {"name": ""}])
def test_update_refuses(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UserUpdate.model_validate(data)


def test_update_takes_any_one_field() -> None:
    assert UserUpdate.model_validate({"password": "longenough"}).password == "longenough"


def _name(value: str) -> str:
    body = UserCreate.model_validate({"email": "a@example.com", "name": value, "password": "x" * 8})
    return body.name


@pytest.mark.parametrize(
    "value",
    [
        "\u200b",  # a zero-width space alone: invisible
        "\u200d\u200c",  # joiners alone: invisible
        "\u00a0\u2003",  # only spaces (no-break, em): blank after trimming
        "Ada\u202eevil",  # right-to-left override
        "\u2066Ada\u2069",  # isolates
        "\u202aAda",  # embedding
        "Ada\ud800",  # a lone surrogate
        "Ada\u2028Lovelace",  # line separator
        "Ada\x7f",  # DEL, a control character
    ],
)
def test_names_that_hide_or_reorder_text_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        _name(value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        # A Persian name needs ZWNJ between its parts; it must survive untouched.
        (
            "\u0645\u062d\u0645\u062f\u200c\u0631\u0636\u0627",
            "\u0645\u062d\u0645\u062f\u200c\u0631\u0636\u0627",
        ),
        # An emoji family is joined with ZWJ.
        (
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),
        # NFC: e + combining acute is stored as the one code point.
        ("Rene\u0301e", "Ren\u00e9e"),
        ("Ada\u200fLovelace", "Ada\u200fLovelace"),  # a plain RTL mark is not an override
    ],
)
def test_real_names_with_joiners_are_kept_nfc(value: str, stored: str) -> None:
    assert _name(value) == stored


def test_update_applies_the_same_name_rule() -> None:
    with pytest.raises(ValidationError):
        UserUpdate.model_validate({"name": "\u200b"})


@pytest.mark.parametrize("email", ["a@example.test", "a@box.LOCAL", "a@onion", "0@0", " a@b.co"])
def test_special_use_domains_are_refused_and_documented(email: str) -> None:
    with pytest.raises(ValidationError):
        UserCreate.model_validate({"email": email, "name": "Ada", "password": "x" * 8})
    assert re.fullmatch(EMAIL_PATTERN, email) is None  # the published pattern says so too
    assert re.fullmatch(EMAIL_PATTERN, "a@example.com") is not None


def _accepted_name(value: str) -> bool:
    try:
        _name(value)
    except ValidationError:
        return False
    return True


def _documented_name(value: str) -> bool:
    field = UserCreate.model_json_schema()["properties"]["name"]
    return (
        field["minLength"] <= len(value) <= field["maxLength"]
        and re.fullmatch(field["pattern"], value) is not None
    )


# Characters every rule is about, mixed into otherwise random text.
_EDGES = (
    "\u0000\u0085\u009d\u00a0\u00ad\u200b\u200c\u200d\u200e\u202e\u2028\u2066"
    "\u3164\ufeff\U000e0041 a"
)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_EDGES)), max_size=12))
def test_the_documented_name_pattern_is_the_rule_applied(value: str) -> None:
    assert _documented_name(value) == _accepted_name(value), repr(value)


def _accepted_email(value: str) -> bool:
    try:
        UserCreate.model_validate({"email": value, "name": "Ada", "password": "x" * 8})
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.emails(), st.text(alphabet="aZ0.-_+@ \u00e9", max_size=20)))
def test_the_documented_email_pattern_is_the_rule_applied(value: str) -> None:
    field = UserCreate.model_json_schema()["properties"]["email"]
    documented = len(value) <= field["maxLength"] and re.fullmatch(field["pattern"], value)
    assert bool(documented) == _accepted_email(value), repr(value)
