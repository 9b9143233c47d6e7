"""The API's answers, as pydantic models: the shapes the OpenAPI document gives them (every answer
the tests receive is validated against it). ``responses.py`` renders domain objects in them.

Only the document reads these, so pydantic is not imported at cold start (``web/openapi.py``);
routes name their answer by class name (``web/routing.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.items import ItemStatus
from chalicelib.uploads import UploadKind, UploadStatus
from chalicelib.users import Role


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


class MfaRequired(Answer):
    message: str
    mfaRequired: Literal[True]
    challenge: str = Field(
        description="For POST /auth/login/mfa: valid 5 minutes, for 5 tries, used once"
    )


class LoginAnswer(Answer):
    """The tokens, or (for an account with a second factor) a challenge and no tokens yet."""

    # Not a RootModel union: the OpenAPI document reads this (web/openapi.py), and no answer is
    # ever built from it.
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
