"""Request bodies the API accepts, validated with pydantic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

# New names: what the site and URLs can carry without escaping.
NewUsername = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
]
# Long enough for passphrases, short enough that nobody makes scrypt chew on a megabyte.
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=256)]
# The original system did not restrict names, so login accepts any stored one, bounded in size.
AnyUsername = Annotated[str, StringConstraints(min_length=1, max_length=128)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class Payload(BaseModel):
    # defer_build: schemas are built on first use, keeping ~50 ms off every cold start.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class SignupRequest(Payload):
    username: NewUsername
    password: NewPassword


class LoginRequest(Payload):
    username: AnyUsername
    password: AnyPassword
    # Browsers get the refresh token as an HttpOnly cookie; other clients may ask for it here.
    refreshTokenDelivery: Literal["cookie", "body"] = "cookie"


class RefreshRequest(Payload):
    refreshToken: Annotated[str, StringConstraints(min_length=1, max_length=300)]


class PasswordChangeRequest(Payload):
    currentPassword: AnyPassword
    newPassword: NewPassword
