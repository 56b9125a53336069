"""FastAPI dependencies as `Annotated` aliases, so routes read `users: Users`."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path

from api.resources import Resources
from api.service import UserService


def get_resources() -> Resources:
    """Overridden by `create_app` with the app's own `Resources`."""
    raise RuntimeError("create_app() did not install the api resources")


ApiResources = Annotated[Resources, Depends(get_resources)]


def get_user_service(resources: ApiResources) -> UserService:
    return resources.user_service


Users = Annotated[UserService, Depends(get_user_service)]
UserIdPath = Annotated[UUID, Path(description="the user's id (a UUID)")]
