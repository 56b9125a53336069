"""Request bodies: unknown fields, empty patches and control characters are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import UserCreate, UserUpdate


def test_create_accepts_a_valid_body_and_strips_whitespace() -> None:
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
