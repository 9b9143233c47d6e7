"""The API's answers: their shapes (pydantic models, for the OpenAPI document; every answer the
tests receive is validated against it) and the functions that render domain objects in them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib import accounts
from chalicelib.clock import iso
from chalicelib.events import Event
from chalicelib.items import Item, ItemStatus
from chalicelib.realtime import IssuedTicket
from chalicelib.sessions import Session
from chalicelib.uploads import Upload, UploadKind, UploadStatus
from chalicelib.users import Role, User


class Answer(BaseModel):
    # Built only when the OpenAPI document is asked for, not at every cold start.
    model_config = ConfigDict(defer_build=True)


class Message(Answer):
    message: str


class FieldError(Answer):
    field: str = Field(description="Where in the body, dotted (body for the whole)")
    reason: str


class Error(Answer):
    message: str = Field(description="What went wrong, for people")
    errors: list[FieldError] | None = Field(
        default=None, description="Validation errors: {field, reason}"
    )
    retryAfter: int | None = Field(default=None, description="Seconds to wait (429)")
    currentVersion: int | None = Field(default=None, description="The item's version (412)")


class Health(Answer):
    status: Literal["ok"]


class SignedUp(Answer):
    message: str
    username: str


class SignedIn(Answer):
    message: str
    token: str = Field(description="Access token (JWT, HS256)")
    username: str
    expiresIn: int = Field(description="Access token lifetime, seconds")
    sessionId: str
    refreshToken: str | None = Field(default=None, description='Only with delivery "body"')
    refreshExpiresIn: int | None = None


class Profile(Answer):
    username: str
    userId: str | None = Field(
        default=None, description="Immutable account id (the access token's sub)"
    )
    createdAt: str
    role: Role
    updatedAt: str | None = None
    email: str | None = Field(default=None, description="Verified or not: see emailVerified")
    emailVerified: bool = False
    mfaEnabled: bool = Field(description="Whether logging in asks for a second factor")


class AdminUser(Profile):
    disabled: bool


class EmailSet(Answer):
    message: str
    email: str
    emailVerified: bool


class EmailVerified(Answer):
    message: str
    email: str


class UserList(Answer):
    users: list[AdminUser]
    nextCursor: str | None


class SessionView(Answer):
    id: str
    createdAt: str
    lastUsedAt: str
    expiresAt: str
    userAgent: str
    current: bool


class SessionList(Answer):
    sessions: list[SessionView]


class EventView(Answer):
    type: str
    at: str
    ip: str
    userAgent: str
    details: dict[str, Any]


class EventList(Answer):
    events: list[EventView]
    nextCursor: str | None


class ItemView(Answer):
    id: str
    name: str
    data: dict[str, Any]
    status: ItemStatus
    createdAt: str
    updatedAt: str
    version: int
    owner: str | None = Field(default=None, description="Only in the admin listing")


class ItemList(Answer):
    items: list[ItemView]
    nextCursor: str | None


class UploadView(Answer):
    id: str
    kind: UploadKind
    filename: str
    contentType: str
    size: int
    status: UploadStatus
    createdAt: str
    downloadUrl: str | None = Field(default=None, description="Short-lived, when ready")


class PresignedPost(Answer):
    url: str
    fields: dict[str, str]


class UploadStarted(Answer):
    upload: UploadView
    post: PresignedPost


class UploadList(Answer):
    uploads: list[UploadView]
    nextCursor: str | None


class WsTicket(Answer):
    url: str = Field(description="The WebSocket URL to open, with a one-time ticket in it")
    expiresIn: int = Field(description="Seconds the ticket stays usable (once)")


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


class MfaRequired(Answer):
    message: str
    mfaRequired: Literal[True]
    challenge: str = Field(
        description="For POST /auth/login/mfa: valid 5 minutes, for 5 tries, used once"
    )


class LoginAnswer(Answer):
    """The tokens, or (for an account with a second factor) a challenge and no tokens yet."""

    # Not a RootModel union: importing pydantic's RootModel costs every cold start ~45 ms, for a
    # model that only describes an answer. The OpenAPI document reads this (web/openapi.py).
    one_of: ClassVar[tuple[type[Answer], ...]] = (SignedIn, MfaRequired)


class MfaEnrolment(Answer):
    secret: str = Field(description="The TOTP secret (base32); shown only now")
    uri: str = Field(description="otpauth:// URI for authenticator apps")
    qrSvg: str = Field(description="The URI as a QR code: an SVG element that scales")


class MfaEnabled(Answer):
    message: str
    recoveryCodes: list[str] = Field(
        min_length=10, max_length=10, description="One-time codes; shown only now"
    )


def mfa_required(result: accounts.MfaChallenge, *, message: str) -> dict[str, Any]:
    """``MfaRequired``."""
    return {"message": message, "mfaRequired": True, "challenge": result.challenge}


def profile_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """``Profile`` from ``profile``'s strings (an authorizer's context holds strings only)."""
    shown: dict[str, Any] = {}
    for name, spec in Profile.model_fields.items():
        if name in fields:
            shown[name] = fields[name] == "true" if spec.annotation is bool else fields[name]
    return shown


def _flag(value: bool) -> str:
    return "true" if value else "false"
