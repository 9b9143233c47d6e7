"""Shapes of the API's answers, for the generated OpenAPI document (not used at run time)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.items import ItemStatus
from chalicelib.uploads import UploadKind, UploadStatus
from chalicelib.users import Role


class Answer(BaseModel):
    # Built only when the OpenAPI document is asked for, not at every cold start.
    model_config = ConfigDict(defer_build=True)


class Message(Answer):
    message: str


class Error(Answer):
    message: str = Field(description="What went wrong, for people")
    errors: list[dict[str, str]] | None = Field(
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
    createdAt: str
    role: Role
    updatedAt: str | None = None


class AdminUser(Profile):
    disabled: bool


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
