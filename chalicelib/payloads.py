"""Request bodies the API accepts, validated with pydantic."""

from __future__ import annotations

import json
from decimal import Clamped, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Annotated, Any, Literal

from boto3.dynamodb.types import DYNAMODB_CONTEXT
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from typing_extensions import TypeAliasType

from chalicelib.items import ItemStatus
from chalicelib.uploads import KINDS, UploadKind
from chalicelib.users import Role

# New names: what the site and URLs can carry without escaping.
NewUsername = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
]
# An address mail systems accept (RFC 5321 lengths); the mailed link proves it is the user's.
Email = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$",
    ),
]
# One-time links' tokens (identity.AccountToken): bounded, the rest is checked by lookup.
LinkToken = Annotated[str, StringConstraints(min_length=1, max_length=300)]
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
    email: Email | None = None


class LoginRequest(Payload):
    username: AnyUsername
    password: AnyPassword
    # Browsers get the refresh token as an HttpOnly cookie; other clients may ask for it here.
    refreshTokenDelivery: Literal["cookie", "body"] = "cookie"


class RefreshRequest(Payload):
    refreshToken: Annotated[str, StringConstraints(min_length=1, max_length=300)]


class EmailChangeRequest(Payload):
    email: Email
    password: AnyPassword


class LinkRequest(Payload):
    token: LinkToken


class ForgotRequest(Payload):
    login: Annotated[str, StringConstraints(min_length=1, max_length=254)]


class ResetRequest(Payload):
    token: LinkToken
    password: NewPassword


class PasswordChangeRequest(Payload):
    currentPassword: AnyPassword
    newPassword: NewPassword
    refreshTokenDelivery: Literal["cookie", "body"] = "cookie"


ItemName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_DATA_BYTES = 32 * 1024


MAX_DATA_DEPTH = 16
# DynamoDB's number range: magnitudes from 1E-130 up to (not including) 1E126.
_TOO_LARGE = Decimal("1e126")
_TOO_SMALL = Decimal("1e-130")


def _storable(data: Any) -> Any:
    """What DynamoDB can hold and give back unchanged: bounded size (well under its 400 KB item
    limit) and nesting, no empty keys, finite numbers of at most 38 significant digits within
    its range. (The request parser has already refused invalid Unicode.)"""
    try:
        encoded = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError("numbers must be finite") from None
    if len(encoded.encode()) > MAX_DATA_BYTES:
        raise ValueError(f"must be at most {MAX_DATA_BYTES} bytes as JSON")
    _check_values(data, depth=1)
    return data


def _check_values(value: Any, *, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, dict):
        if "" in value:
            # DynamoDB refuses empty attribute names at any depth.
            raise ValueError("keys must not be empty, at any depth")
        for inner in value.values():
            _check_values(inner, depth=depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _check_values(inner, depth=depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = DYNAMODB_CONTEXT.create_decimal(repr(value))
        except (Inexact, Rounded, Overflow, Underflow, Clamped):
            number = None
        if number is None or abs(number) >= _TOO_LARGE or 0 < abs(number) < _TOO_SMALL:
            raise ValueError(
                "numbers must have at most 38 significant digits and lie between 1e-130 and 1e126"
            )


# The same rules as the document states them (a recursive schema with no empty keys, integers
# of at most 38 digits, floats within DynamoDB's range). ``_storable`` runs first, so a refusal
# names its rule in a few words rather than one message per branch of the union.
_MAX_INTEGER = 10**38 - 1
StoredKey = Annotated[str, StringConstraints(min_length=1)]
StoredFloat = Annotated[
    float,
    WithJsonSchema(
        {
            "anyOf": [
                {"const": 0},
                {"type": "number", "minimum": 1e-130, "exclusiveMaximum": 1e126},
                {"type": "number", "maximum": -1e-130, "exclusiveMinimum": -1e126},
            ]
        }
    ),
]
StoredValue = TypeAliasType(
    "StoredValue",
    "dict[StoredKey, StoredValue] | list[StoredValue] | str | bool"
    " | Annotated[int, Field(ge=-_MAX_INTEGER, le=_MAX_INTEGER)] | StoredFloat | None",
)
ItemData = Annotated[
    dict[StoredKey, StoredValue],
    BeforeValidator(_storable),
    Field(description=f"At most {MAX_DATA_BYTES} bytes as JSON, {MAX_DATA_DEPTH} levels deep"),
]


class ItemWrite(Payload):
    """POST /items and PUT /items/{id}: the whole item."""

    name: ItemName
    data: ItemData = {}
    status: ItemStatus = "active"


class ItemPatch(Payload):
    """PATCH /items/{id}: only the fields given change."""

    name: ItemName | None = None
    data: ItemData | None = None
    status: ItemStatus | None = None


class UserCreate(Payload):
    username: NewUsername
    password: NewPassword
    role: Role = "user"


class UserUpdate(Payload):
    """PATCH /users/{username}: only the fields given change."""

    role: Role | None = None
    disabled: bool | None = None


class UserReplace(Payload):
    """PUT /users/{username}: both fields."""

    role: Role
    disabled: bool


class PasswordConfirmation(Payload):
    password: AnyPassword


Filename = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _whole(value: Any) -> Any:
    """JSON does not tell 8523.0 from 8523, and neither does JSON Schema's integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _kind_rules(schema: dict[str, Any]) -> None:
    """Each kind's types and size limit, which ``Uploads.start`` enforces, in the schema."""
    schema["oneOf"] = [
        {
            "properties": {
                "kind": {"const": kind},
                "contentType": {"enum": sorted(rules.content_types)},
                "size": {"type": "integer", "minimum": 1, "maximum": rules.max_bytes},
            }
        }
        for kind, rules in KINDS.items()
    ]


class UploadStart(Payload):
    """POST /uploads. (One model rather than a union by kind: pydantic's RootModel costs every
    cold start ~40 ms building its validator at import.)"""

    model_config = ConfigDict(json_schema_extra=_kind_rules)

    filename: Filename
    contentType: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    size: Annotated[int, Field(ge=1, le=1024**3), BeforeValidator(_whole)]
    kind: UploadKind


# A TOTP code (6 digits) or a recovery code (xxxxx-xxxxx), as a person may type it.
MfaCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class MfaConfirmRequest(Payload):
    """POST /auth/mfa/totp/confirm: the authenticator app's first code."""

    code: MfaCode


class MfaDisableRequest(Payload):
    """DELETE /auth/mfa/totp: the password, then a TOTP or recovery code."""

    password: AnyPassword
    code: MfaCode


class MfaLoginRequest(Payload):
    """POST /auth/login/mfa: the challenge the password gave, and a TOTP or recovery code."""

    challenge: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    code: MfaCode
    refreshTokenDelivery: Literal["cookie", "body"] = "cookie"
