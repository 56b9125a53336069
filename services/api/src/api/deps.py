"""FastAPI dependencies as `Annotated` aliases, so routes read `users: Users`.

The app's one `Resources` object is attached by `create_app` (`attach_resources`) and read
back here, typed. Not `dependency_overrides`: FastAPI re-inspects an override's signature on
every request, which cost more than the cache hit it serves. Dependencies are `async def`
because FastAPI runs a plain `def` dependency in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, Final
from uuid import UUID

from fastapi import Depends, FastAPI, Path, Request

from api.resources import Resources
from api.service import UserService

_ATTRIBUTE: Final = "resources"


def attach_resources(app: FastAPI, resources: Resources) -> None:
    setattr(app.state, _ATTRIBUTE, resources)


def resources_of(app: FastAPI) -> Resources:
    resources = getattr(app.state, _ATTRIBUTE, None)
    if not isinstance(resources, Resources):
        raise TypeError("create_app() did not attach the api resources")
    return resources


async def get_resources(request: Request) -> Resources:
    return resources_of(request.app)


ApiResources = Annotated[Resources, Depends(get_resources)]


async def get_user_service(request: Request) -> UserService:
    return resources_of(request.app).user_service


Users = Annotated[UserService, Depends(get_user_service)]
UserIdPath = Annotated[UUID, Path(description="the user's id (a UUID)")]
