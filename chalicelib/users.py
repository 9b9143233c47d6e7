"""Users and their storage: the profile row the original system wrote, plus a role.

``DynamoDBUserRepository`` and its twin ``InMemoryUserRepository`` keep the same contract
(``tests/test_users.py`` runs one body against both).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from chalicelib.errors import Conflict, NotFound
from chalicelib.keys import KEY_PART, PROFILE, is_condition_failure, user_key, user_pk
from chalicelib.paging import MAX_READS, decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

Role = Literal["user", "admin"]
DEFAULT_ROLE: Role = "user"


class UsernameTaken(Conflict):
    """A user with this username already exists."""

    message = "Username is already taken"


class UserNotFound(NotFound):
    """No user has this username."""

    message = "User not found"


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


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    cursor: str | None


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

    def set_access(
        self, username: str, *, role: str | None, disabled: bool | None, updated_at: str
    ) -> User:
        """Change the role and/or the disabled flag; raise ``UserNotFound`` if there is none."""

    def list(self, *, limit: int, cursor: str | None) -> UserPage:
        """Every profile, a page at a time, in no particular order (for administrators)."""


class DynamoDBUserRepository:
    """Profile rows (``keys.user_key``), their attributes named as the original wrote them."""

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
            if is_condition_failure(exc):
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
            if is_condition_failure(exc):
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
            if is_condition_failure(exc):
                raise UserNotFound(username) from exc
            raise
        return user_from_item(response["Attributes"])

    def list(self, *, limit: int, cursor: str | None) -> UserPage:
        # A scan, so meant for administrators only; the filter skips every non-profile row.
        scan: dict[str, Any] = {"FilterExpression": Attr(SORT_KEY).eq(PROFILE)}
        if cursor is not None:
            position = decode_cursor(cursor, {"pk": KEY_PART, "sk": KEY_PART})
            scan["ExclusiveStartKey"] = {PARTITION_KEY: position["pk"], SORT_KEY: position["sk"]}
        rows: list[Any] = []
        resume = None
        for _ in range(MAX_READS):
            page = self._table.scan(**scan, Limit=500)
            rows += page.get("Items", [])
            resume = page.get("LastEvaluatedKey")
            if len(rows) > limit or resume is None:
                break
            scan["ExclusiveStartKey"] = resume
        users = [user_from_item(row) for row in rows[:limit]]
        if len(rows) > limit:
            last = rows[limit - 1]
            return UserPage(users, _cursor(last[PARTITION_KEY], last[SORT_KEY]))
        return UserPage(
            users, None if resume is None else _cursor(resume[PARTITION_KEY], resume[SORT_KEY])
        )

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
            if is_condition_failure(exc):
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

    def set_access(
        self, username: str, *, role: str | None, disabled: bool | None, updated_at: str
    ) -> User:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise UserNotFound(username)
            changed = replace(
                user,
                role=user.role if role is None else role,
                disabled=user.disabled if disabled is None else disabled,
                updated_at=updated_at,
            )
            self._users[username] = changed
            return changed

    def list(self, *, limit: int, cursor: str | None) -> UserPage:
        with self._lock:
            # Ordered by partition key, so the cursor has the DynamoDB one's shape and meaning.
            keyed = sorted((user_pk(name), user) for name, user in self._users.items())
        if cursor is not None:
            position = decode_cursor(cursor, {"pk": KEY_PART, "sk": KEY_PART})
            after = (position["pk"], position["sk"])
            keyed = [(pk, user) for pk, user in keyed if (pk, PROFILE) > after]
        users = [user for _, user in keyed[:limit]]
        if len(keyed) > limit:
            return UserPage(users, _cursor(keyed[limit - 1][0], PROFILE))
        return UserPage(users, None)

    def delete_owned(self, username: str) -> int:
        """Forget the profile; how many rows went (0 or 1)."""
        with self._lock:
            return 0 if self._users.pop(username, None) is None else 1

    def _bump(self, username: str, *, updated_at: str) -> int:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise UserNotFound(username)
            version = user.token_version + 1
            self._users[username] = replace(user, token_version=version, updated_at=updated_at)
            return version


def _cursor(pk: Any, sk: Any) -> str:
    return encode_cursor({"pk": str(pk), "sk": str(sk)})


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
