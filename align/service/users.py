"""Users, roles and tokens of `rlaif service`: who is asking, decided by a token, never a body.

A team shares the service, so every request carries ``Authorization: Bearer TOKEN`` (or, on
the labelling page, a session cookie made by logging in with a token). Tokens are random,
shown once (`rlaif service token create` prints one as its last line) and kept only as their
SHA-256, so a copy of the database holds no usable credential; a token or session can be
revoked and stops working on the next request. Each user has one role (``admin`` manages
users, instructions, gold items and endpoints; ``operator`` runs jobs and queues pairs;
``annotator`` labels) and a name that is unique after normalisation (NFKC, zero-width and
other format characters removed, case-folded, trimmed), so ``Ann2``, ``ann2 `` and
``ann2\\u200b`` are one person.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel

from datagen import store
from datagen.errors import UserInputError
from datagen.store import tables

USERS = tables.SERVICE_USERS
TOKENS = tables.SERVICE_TOKENS
ROLES = ("admin", "operator", "annotator")
Role = Literal[ROLES]  # type: ignore[valid-type]
SESSION_S = 12 * 3600
NAME_MAX = 64


class User(BaseModel):
    """Who a request comes from."""

    id: str
    name: str
    role: Role


def normalise_name(raw: str) -> str:
    """The one spelling of a user name: NFKC, format characters (zero-width spaces and
    joiners, soft hyphens, BOMs) removed, case-folded, trimmed; raises UserInputError when
    nothing usable is left or it holds control characters."""
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = unicodedata.normalize("NFKC", text.casefold()).strip()
    if not text or len(text) > NAME_MAX:
        raise UserInputError(f"name {raw!r}: give 1 to {NAME_MAX} visible characters")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise UserInputError(f"name {raw!r}: control characters are not allowed")
    return text


def token_hash(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def find_user(db: Any, name: str) -> User | None:
    """The user of a (normalised) name, or None."""
    rows = store.load_rows(db, USERS, name=normalise_name(name))
    return User(**{k: rows[0][k] for k in ("id", "name", "role")}) if rows else None


def add_user(db: Any, name: str, role: str) -> User:
    """The user of this name, created with ``role`` when new; a name already used with
    another role is a UserInputError (one person, one role)."""
    if role not in ROLES:
        raise UserInputError(f"--role {role}: use one of {', '.join(ROLES)}")
    found = find_user(db, name)
    if found is not None:
        if found.role != role:
            raise UserInputError(f"--name {name}: {found.name!r} is already a {found.role}")
        return found
    user = User(id="user-" + secrets.token_hex(8), name=normalise_name(name), role=role)
    store.save_rows(db, USERS, [user.model_dump() | {"created_at": time.time()}], pk="id")
    return user


def issue_token(db: Any, user: User, kind: str = "token", ttl_s: float | None = None) -> str:
    """A new secret for a user (a bearer token, or a page session that expires)."""
    secret = "rlaif_" + secrets.token_urlsafe(32)
    now = time.time()
    store.save_rows(db, TOKENS, [{
        "hash": token_hash(secret), "id": "tok-" + secrets.token_hex(6), "user_id": user.id,
        "kind": kind, "created_at": now, "expires_at": now + ttl_s if ttl_s else None,
        "revoked_at": None}], pk="hash")
    return secret


def create_token(db: Any, name: str, role: str) -> tuple[User, str]:
    """A user (created when new) and a new bearer token for them."""
    with store.transaction(db):
        user = add_user(db, name, role)
        return user, issue_token(db, user)


def authenticate(db: Any, secret: str) -> User | None:
    """The user a token or session belongs to; None when unknown, revoked or expired."""
    rows = store.load_rows(db, TOKENS, hash=token_hash(secret))
    if not rows or rows[0]["revoked_at"] is not None:
        return None
    if rows[0]["expires_at"] is not None and rows[0]["expires_at"] < time.time():
        return None
    users = store.load_rows(db, USERS, id=rows[0]["user_id"])
    return User(**{k: users[0][k] for k in ("id", "name", "role")}) if users else None


def revoke(db: Any, token_id: str | None = None, name: str | None = None,
           secret: str | None = None) -> int:
    """Revoke a token by its id, every token and session of a user, or one secret; return
    how many were revoked."""
    if secret is not None:
        rows = store.load_rows(db, TOKENS, hash=token_hash(secret))
    elif token_id is not None:
        rows = store.load_rows(db, TOKENS, id=token_id)
    else:
        user = find_user(db, name or "")
        rows = store.load_rows(db, TOKENS, user_id=user.id) if user else []
    live = [r | {"revoked_at": time.time()} for r in rows if r["revoked_at"] is None]
    store.save_rows(db, TOKENS, live, pk="hash", replace=True)
    return len(live)


def list_tokens(db: Any) -> list[dict[str, Any]]:
    """Every bearer token with its user and state, without secrets or hashes."""
    users = {u["id"]: u for u in store.load_rows(db, USERS)}
    out = []
    for row in store.load_rows(db, TOKENS, order_by="created_at", kind="token"):
        user = users.get(row["user_id"], {})
        out.append({"id": row["id"], "name": user.get("name"), "role": user.get("role"),
                    "created_at": row["created_at"], "revoked": row["revoked_at"] is not None})
    return out
