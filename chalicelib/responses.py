"""The API's answers, rendered from domain objects as plain JSON values; their shapes, for the
OpenAPI document, are the models of ``answers.py`` each function names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chalicelib import accounts
from chalicelib.clock import iso
from chalicelib.events import Event
from chalicelib.items import Item
from chalicelib.realtime import IssuedTicket
from chalicelib.sessions import Session
from chalicelib.uploads import Upload
from chalicelib.users import User

# answers.Profile's fields, in its order, and those of them that are booleans.
PROFILE_FIELDS = (
    "username",
    "userId",
    "createdAt",
    "role",
    "updatedAt",
    "email",
    "emailVerified",
    "mfaEnabled",
)
PROFILE_FLAGS = frozenset({"emailVerified", "mfaEnabled"})


def signed_in(result: accounts.SignedIn, *, message: str, refresh_in_body: bool) -> dict[str, Any]:
    """``SignedIn``."""
    shown: dict[str, Any] = {
        "message": message,
        "token": result.access.token,
        "username": result.user.username,
        "expiresIn": result.access.expires_in,
        "sessionId": result.session.session_id,
    }
    if result.refresh is not None and refresh_in_body:
        shown["refreshToken"] = result.refresh.encode()
        shown["refreshExpiresIn"] = result.refresh_expires_in
    return shown


def profile(user: User) -> dict[str, str]:
    """``Profile`` as the authorizer's context carries it: strings only (``profile_view``)."""
    shown = {"username": user.username, "createdAt": user.created_at, "role": user.role}
    optional = {"userId": user.user_id, "updatedAt": user.updated_at, "email": user.email}
    shown.update({key: value for key, value in optional.items() if value is not None})
    shown["emailVerified"] = _flag(user.email_verified)
    shown["mfaEnabled"] = _flag(user.mfa_enabled)
    return shown


def admin_user(user: User) -> dict[str, Any]:
    """``AdminUser``."""
    return {**profile_view(profile(user)), "disabled": user.disabled}


def session(session: Session, *, current: str) -> dict[str, Any]:
    """``SessionView``; ``current`` is the caller's own session id."""
    expires = min(session.expires_at, session.idle_expires_at)
    return {
        "id": session.session_id,
        "createdAt": _iso(session.created_at),
        "lastUsedAt": _iso(session.last_used_at),
        "expiresAt": _iso(expires),
        "userAgent": session.user_agent,
        "current": session.session_id == current,
    }


def event(event: Event) -> dict[str, Any]:
    """``EventView``."""
    return {
        "type": event.kind,
        "at": event.at,
        "ip": event.ip,
        "userAgent": event.user_agent,
        "details": event.details,
    }


def item(item: Item, *, with_owner: bool = False) -> dict[str, Any]:
    """``ItemView``; the owner only in the administrators' listing."""
    shown = {
        "id": item.item_id,
        "name": item.name,
        "data": item.data,
        "status": item.status,
        "createdAt": item.created_at,
        "updatedAt": item.updated_at,
        "version": item.version,
    }
    return {**shown, "owner": item.owner} if with_owner else shown


def upload(upload: Upload, *, download_url: str | None = None) -> dict[str, Any]:
    """``UploadView``."""
    shown: dict[str, Any] = {
        "id": upload.upload_id,
        "kind": upload.kind,
        "filename": upload.filename,
        "contentType": upload.content_type,
        "size": upload.size,
        "status": upload.status,
        "createdAt": upload.created_at,
    }
    if download_url is not None:
        shown["downloadUrl"] = download_url
    return shown


def ws_ticket(issued: IssuedTicket) -> dict[str, Any]:
    """``WsTicket``."""
    return {"url": issued.url, "expiresIn": issued.expires_in}


def _iso(epoch_seconds: int) -> str:
    return iso(datetime.fromtimestamp(epoch_seconds, UTC))


def mfa_required(result: accounts.MfaChallenge, *, message: str) -> dict[str, Any]:
    """``MfaRequired``."""
    return {"message": message, "mfaRequired": True, "challenge": result.challenge}


def profile_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """``Profile`` from ``profile``'s strings (an authorizer's context holds strings only)."""
    shown: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        if name in fields:
            shown[name] = fields[name] == "true" if name in PROFILE_FLAGS else fields[name]
    return shown


def _flag(value: bool) -> str:
    return "true" if value else "false"
