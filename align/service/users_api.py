"""The user routes of `rlaif service` (``/v1/users``): an admin manages who may use it.

The same operations as `rlaif service token create|list|revoke`, for an admin who holds a
token rather than the database file: make a user and token (the secret is in this one reply
only), list users and their tokens without secrets, revoke every token and session of a user.
Plain functions behind the gate, admins only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from align.service.auth import allow
from align.service.context import BODY, ERRORS, Problem, Service
from align.service.jobs_api import ON_SERVICE
from align.service.users import Role, User, create_token, list_tokens, revoke
from datagen.errors import UserInputError

ADMIN = Depends(allow())


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role


class NewToken(BaseModel):
    name: str
    role: str
    token: str = Field(description="The secret; shown in this reply only")


class TokenInfo(BaseModel):
    id: str
    name: str | None
    role: str | None
    created_at: float
    revoked: bool


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class Revoked(BaseModel):
    revoked: int


async def add_user(body: NewUser, request: Request, service: Service = ON_SERVICE,
                   admin: User = ADMIN) -> Any:
    """Make a token for a user (the user is created when new)."""
    try:
        user, secret = await service.db.call(create_token, body.name, body.role)
    except UserInputError as exc:
        raise HTTPException(422, [{"loc": ["body", "name"], "msg": exc.message,
                                   "type": "value_error"}]) from None
    request.state.audit_target = user.name
    return {"name": user.name, "role": user.role, "token": secret}


async def tokens(service: Service = ON_SERVICE, admin: User = ADMIN) -> Any:
    """Every token: id, user, role, state (no secrets)."""
    return {"tokens": await service.db.call(list_tokens)}


async def revoke_user(name: str, request: Request, service: Service = ON_SERVICE,
                      admin: User = ADMIN) -> Any:
    """Revoke every token and session of a user."""
    request.state.audit_target = name
    try:
        count = await service.db.call(lambda db: revoke(db, name=name))
    except UserInputError as exc:
        raise HTTPException(404, exc.message) from None
    if not count:
        raise HTTPException(404, f"no live token of {name!r}")
    return {"revoked": count}


def user_routes() -> APIRouter:
    """The /v1/users routes."""
    router = APIRouter(prefix="/v1/users", tags=["users"], responses=ERRORS)
    router.add_api_route("", add_user, methods=["POST"], status_code=201,
                         response_model=NewToken, responses=BODY)
    router.add_api_route("/tokens", tokens, methods=["GET"], response_model=TokenList)
    router.add_api_route("/{name}/revoke", revoke_user, methods=["POST"], response_model=Revoked,
                         responses={404: {"model": Problem, "description": "No live token"}})
    return router
