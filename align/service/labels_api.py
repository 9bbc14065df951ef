"""The human labelling routes of `rlaif service` (``/label``): the page, its API and the stats.

``/label`` is plain HTML and a small script, every model-written text put on the page as
text, never as markup, under a content security policy that allows no inline script. A person
logs in on the page with their token once (``POST /label/api/login``), which sets a session
cookie (HttpOnly, SameSite=Strict), so no secret is ever in a URL. Labelling is honest by
construction: a vote is stored under the logged-in user (a body naming an annotator is
refused), an annotator is shown only the next item and their own progress (never gold
answers, others' votes, agreement or their gold accuracy), and gold items, instructions and
queue thresholds are the admin's. Each route is a plain function that gets the ``Service``
and the caller's ``User`` as dependencies and raises ``HTTPException`` for what it refuses.
The queue, votes and agreement are ``align.labeling``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from align.labeling import pages as label_pages
from align.labeling.queue import QueueItem, Vote, enqueue, instructions, put_setting, queue_item
from align.service.auth import SESSION_COOKIE, allow, current_user, presented_secret
from align.service.context import BODY, ERRORS, Problem, Service
from align.service.jobs_api import ON_SERVICE
from align.service.users import SESSION_S, User, authenticate, issue_token, revoke
from datagen.errors import UserInputError
from judges.pairs import prompt_text

STATIC = Path(__file__).parents[1] / "labeling" / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
ANYONE = Depends(current_user)
ANNOTATOR = Depends(allow("annotator"))
OPERATOR = Depends(allow("operator"))
ADMIN = Depends(allow())


class ItemOut(BaseModel):
    id: str
    prompt: str
    responses: list[str]


class Progress(BaseModel):
    items: int
    complete: int
    votes: int
    mine: int | None = None


class NextOut(BaseModel):
    item: ItemOut | None
    progress: Progress


class VoteIn(BaseModel):
    """A vote; who casts it is the logged-in user (a body naming anyone is refused)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=64)
    choice: Literal["a", "b", "tie", "fail", "rank"]
    ranking: list[int] | None = Field(default=None, max_length=26)
    note: str = Field(default="", max_length=4000)


class VoteOut(BaseModel):
    stored: bool
    progress: Progress


class InstructionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=100_000)


class ItemsIn(BaseModel):
    """Pairs to put on the human queue (as `rlaif label-queue` reads them from files)."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    gold: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    annotators_per_pair: int = Field(default=3, ge=1, le=100)


class ItemsOut(BaseModel):
    added: int


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    name: str
    role: str


async def label_page(user: User = ANYONE) -> Any:
    """The labelling page."""
    return FileResponse(STATIC / "label.html", headers=PAGE_HEADERS)


async def login_page() -> Any:
    """The labelling page before login (it shows the login form)."""
    return FileResponse(STATIC / "label.html", headers=PAGE_HEADERS)


async def login(body: LoginIn, request: Request, response: Response,
                service: Service = ON_SERVICE) -> Any:
    """Log in with a token: a session cookie (HttpOnly, SameSite=Strict, and Secure when the
    page was served over HTTPS, as behind a TLS proxy) for the page."""
    user = await service.db.call(authenticate, body.token)
    if user is None:
        raise HTTPException(401, "wrong or revoked token")
    session = await service.db.call(issue_token, user, "session", SESSION_S)
    secure = request.headers.get("origin", "").startswith("https://")
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_S, path="/", httponly=True,
                        samesite="strict", secure=secure)
    return {"name": user.name, "role": user.role}


async def logout(request: Request, response: Response, service: Service = ON_SERVICE,
                 user: User = ANYONE) -> Any:
    """End the page session of this cookie."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    secret, by_cookie = presented_secret(headers)
    if secret and by_cookie:
        await service.db.call(revoke, None, None, secret)
        service.forget(secret)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"name": user.name, "role": user.role}


async def me(user: User = ANYONE) -> Any:
    """Who the token or session belongs to."""
    return {"name": user.name, "role": user.role}


async def label_script() -> Any:
    """The page script (public: the login form needs it)."""
    return FileResponse(STATIC / "label.js", media_type="text/javascript",
                        headers={"X-Content-Type-Options": "nosniff"})


async def instructions_page(service: Service = ON_SERVICE, user: User = ANYONE) -> Any:
    """The annotator instructions (editable by an admin)."""
    text = await service.db.call(instructions)
    return HTMLResponse(label_pages.instructions_page(text, user.role == "admin"),
                        headers=PAGE_HEADERS)


async def stats_page(service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """Agreement between annotators (Fleiss' and mean pairwise Cohen's kappa) and between
    the judge and the human consensus, with a calibration plot."""
    stats = await service.on_board("stats")
    return HTMLResponse(label_pages.stats_page(stats), headers=PAGE_HEADERS)


async def get_instructions(service: Service = ON_SERVICE, user: User = ANYONE) -> Any:
    """The annotator instructions."""
    return {"text": await service.db.call(instructions)}


async def put_instructions(body: InstructionsBody, service: Service = ON_SERVICE,
                           user: User = ADMIN) -> Any:
    """Replace the annotator instructions (admins)."""
    await service.db.call(put_setting, "instructions", body.text)
    return {"text": body.text}


async def next_item(service: Service = ON_SERVICE, user: User = ANNOTATOR) -> Any:
    """Your next item (null when the queue has nothing for you) and your progress."""
    item, progress = await service.db.call(
        lambda _db: (service.board.next_item(user.name), service.board.progress(user.name)))
    shown = None if item is None else {"id": item.id, "prompt": prompt_text(item.prompt),
                                       "responses": item.responses}
    return {"item": shown, "progress": progress}


async def vote(body: VoteIn, request: Request, service: Service = ON_SERVICE,
               user: User = ANNOTATOR) -> Any:
    """Store your vote (your earlier vote on the item is replaced, nobody else's)."""
    request.state.audit_target = body.item_id
    try:
        progress = await service.on_board("record",
                                          Vote(annotator=user.name, **body.model_dump()))
    except KeyError:
        raise HTTPException(404, f"no item {body.item_id!r}") from None
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["body", "choice"], "msg": str(exc),
                                   "type": "value_error"}]) from None
    return {"stored": True, "progress": progress}


async def add_items(body: ItemsIn, service: Service = ON_SERVICE,
                    user: User = OPERATOR) -> Any:
    """Put pairs on the queue (and, for an admin, hidden gold pairs)."""
    if body.gold and user.role != "admin":
        raise HTTPException(403, "only an admin adds gold items")
    try:
        items = _queue_items(body)
    except UserInputError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": exc.message,
                                   "type": "value_error"}]) from None
    return {"added": await service.db.call(enqueue, items)}


async def stats(service: Service = ON_SERVICE, user: User = OPERATOR) -> dict[str, Any]:
    """The numbers behind /label/stats, as JSON."""
    return await service.on_board("stats")


async def export(service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """Every queued pair with its votes and ``human`` consensus label, as JSONL."""
    await service.on_board("refresh")
    rows = await service.on_board("export")
    return StreamingResponse(
        iter([json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows]),
        media_type="application/x-ndjson")


def _queue_items(body: ItemsIn) -> list[QueueItem]:
    items = [queue_item(obj, f"pairs[{i}]", False, body.annotators_per_pair)
             for i, obj in enumerate(body.pairs)]
    items += [queue_item(obj, f"gold[{i}]", True, body.annotators_per_pair)
              for i, obj in enumerate(body.gold)]
    return items


def label_routes() -> APIRouter:
    """The /label routes."""
    router = APIRouter(prefix="/label", tags=["labels"], responses=ERRORS)
    router.add_api_route("", label_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/login", login_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/api/login", login, methods=["POST"], response_model=Me,
                         responses={**BODY, 401: {"model": Problem,
                                                  "description": "Wrong or revoked token"}})
    router.add_api_route("/api/logout", logout, methods=["POST"], response_model=Me)
    router.add_api_route("/api/me", me, methods=["GET"], response_model=Me)
    router.add_api_route("/label.js", label_script, methods=["GET"],
                         response_class=FileResponse)
    router.add_api_route("/instructions", instructions_page, methods=["GET"],
                         response_class=HTMLResponse)
    router.add_api_route("/stats", stats_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/api/instructions", get_instructions, methods=["GET"],
                         response_model=InstructionsBody)
    router.add_api_route("/api/instructions", put_instructions, methods=["PUT"],
                         response_model=InstructionsBody, responses=BODY)
    router.add_api_route("/api/next", next_item, methods=["GET"], response_model=NextOut)
    router.add_api_route("/api/votes", vote, methods=["POST"], response_model=VoteOut,
                         responses={**BODY,
                                    404: {"model": Problem, "description": "No such item"},
                                    422: {"description": "A vote that does not fit the item"}})
    router.add_api_route("/api/items", add_items, methods=["POST"], response_model=ItemsOut,
                         responses={**BODY,
                                    422: {"description": "A pair that cannot be queued"}})
    router.add_api_route("/api/stats", stats, methods=["GET"])
    router.add_api_route(
        "/api/export", export, methods=["GET"], response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                         "description": "Pairs with their human label, one JSON object a line"}})
    return router
