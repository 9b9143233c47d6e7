"""Users and their storage: the profile row the original system wrote, plus a role."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

from botocore.exceptions import ClientError

from chalicelib.table import PARTITION_KEY, user_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

DEFAULT_ROLE = "user"


class UsernameTaken(Exception):
    """A user with this username already exists."""


class UserNotFound(Exception):
    """No user has this username."""


@dataclass(frozen=True, kw_only=True)
class User:
    username: str
    password_hash: str = field(repr=False)
    created_at: str
    role: str = DEFAULT_ROLE
    updated_at: str | None = None
    # Access tokens carry the version they were issued at; bumping it revokes them all.
    token_version: int = 0
    disabled: bool = False


class UserRepository(Protocol):
    def add(self, user: User) -> None:
        """Store a new user; raise ``UsernameTaken`` if the name exists."""

    def get(self, username: str) -> User | None: ...

    def replace_password_hash(self, username: str, *, old: str, new: str, updated_at: str) -> bool:
        """Swap the hash only if it is still ``old``; False when it was not."""

    def change_password(self, username: str, *, new_hash: str, updated_at: str) -> int:
        """Set a new hash and bump the token version; return the new version."""

    def bump_token_version(self, username: str, *, updated_at: str) -> int:
        """Revoke every access token issued so far; return the new version."""


class DynamoDBUserRepository:
    """Profile rows under ``USER#{username}`` / ``PROFILE``, named as the original wrote them."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, user: User) -> None:
        item: dict[str, Any] = {
            **user_key(user.username),
            "username": user.username,
            "passwordHash": user.password_hash,
            "createdAt": user.created_at,
            "role": user.role,
        }
        if user.updated_at is not None:
            item["updatedAt"] = user.updated_at
        if user.token_version:
            item["tokenVersion"] = user.token_version
        if user.disabled:
            item["disabled"] = True
        try:
            # The condition makes the write itself the uniqueness check, so concurrent signups
            # of one name cannot both succeed.
            self._table.put_item(
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise UsernameTaken(user.username) from exc
            raise

    def get(self, username: str) -> User | None:
        response = self._table.get_item(Key=user_key(username), ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else user_from_item(item)

    def replace_password_hash(self, username: str, *, old: str, new: str, updated_at: str) -> bool:
        try:
            self._table.update_item(
                Key=user_key(username),
                UpdateExpression="SET passwordHash = :new, updatedAt = :now",
                ConditionExpression="passwordHash = :old",
                ExpressionAttributeValues={":new": new, ":old": old, ":now": updated_at},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def change_password(self, username: str, *, new_hash: str, updated_at: str) -> int:
        return self._update_existing(
            username,
            "SET passwordHash = :hash, updatedAt = :now ADD tokenVersion :one",
            {":hash": new_hash, ":now": updated_at, ":one": 1},
        )

    def bump_token_version(self, username: str, *, updated_at: str) -> int:
        return self._update_existing(
            username, "SET updatedAt = :now ADD tokenVersion :one", {":now": updated_at, ":one": 1}
        )

    def set_access(
        self, username: str, *, role: str | None, disabled: bool | None, updated_at: str
    ) -> User:
        """Change the role and/or the disabled flag of an existing user."""
        sets = ["updatedAt = :now"]
        values: dict[str, Any] = {":now": updated_at}
        if role is not None:
            sets.append("#role = :role")
            values[":role"] = role
        if disabled is not None:
            sets.append("disabled = :disabled")
            values[":disabled"] = disabled
        try:
            response = self._table.update_item(
                Key=user_key(username),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={
                    "#pk": PARTITION_KEY,
                    **({"#role": "role"} if role else {}),
                },
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise UserNotFound(username) from exc
            raise
        return user_from_item(response["Attributes"])

    def _update_existing(self, username: str, expression: str, values: dict[str, Any]) -> int:
        try:
            # The condition stops an update from creating a half profile for a deleted user.
            response = self._table.update_item(
                Key=user_key(username),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise UserNotFound(username) from exc
            raise
        return int(str(response["Attributes"]["tokenVersion"]))


class InMemoryUserRepository:
    """A thread-safe fake with the same semantics as the DynamoDB repository."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._lock = threading.RLock()

    def add(self, user: User) -> None:
        with self._lock:
            if user.username in self._users:
                raise UsernameTaken(user.username)
            self._users[user.username] = user

    def get(self, username: str) -> User | None:
        with self._lock:
            return self._users.get(username)

    def replace_password_hash(self, username: str, *, old: str, new: str, updated_at: str) -> bool:
        with self._lock:
            user = self._users.get(username)
            if user is None or user.password_hash != old:
                return False
            self._users[username] = replace(user, password_hash=new, updated_at=updated_at)
            return True

    def change_password(self, username: str, *, new_hash: str, updated_at: str) -> int:
        with self._lock:
            version = self._bump(username, updated_at=updated_at)
            self._users[username] = replace(self._users[username], password_hash=new_hash)
            return version

    def bump_token_version(self, username: str, *, updated_at: str) -> int:
        return self._bump(username, updated_at=updated_at)

    def _bump(self, username: str, *, updated_at: str) -> int:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise UserNotFound(username)
            version = user.token_version + 1
            self._users[username] = replace(user, token_version=version, updated_at=updated_at)
            return version


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def user_from_item(item: Mapping[str, Any]) -> User:
    """A profile row, as the original system or this one wrote it."""
    return User(
        username=str(item["username"]),
        password_hash=str(item["passwordHash"]),
        created_at=str(item["createdAt"]),
        # Rows written by the original system have no role.
        role=str(item.get("role", DEFAULT_ROLE)),
        updated_at=str(item["updatedAt"]) if "updatedAt" in item else None,
        token_version=int(str(item.get("tokenVersion", 0))),
        disabled=item.get("disabled") is True,
    )


class OwnerMissing(Exception):
    """The owner's account no longer exists."""


class ConcurrentChange(Exception):
    """A simultaneous write got in the way; retrying will do."""


def put_owned(table: Table, row: dict[str, Any], *, owner: str) -> None:
    """Write a new row under ``owner`` only while the owner's profile exists, atomically."""
    names = {"#pk": PARTITION_KEY}
    try:
        table.meta.client.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table.name,
                        "Key": cast("Any", user_key(owner)),
                        "ConditionExpression": "attribute_exists(#pk)",
                        "ExpressionAttributeNames": names,
                    }
                },
                {
                    "Put": {
                        "TableName": table.name,
                        "Item": cast("Any", row),
                        "ConditionExpression": "attribute_not_exists(#pk)",
                        "ExpressionAttributeNames": names,
                    }
                },
            ]
        )
    except ClientError as exc:
        if _code(exc) != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons", [])
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise OwnerMissing(owner) from exc
        raise ConcurrentChange(owner) from exc
