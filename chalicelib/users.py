"""Users and their storage: the profile row the original system wrote, plus a role.

A profile marked deleted (``deletedAt``, ``mark_deleted``) counts as gone: every read but
``get(..., marked=True)`` (the purge's and the deletion's own) skips it, and every update of the
repository is conditional on its absence. It stays until the purge of the account
(``chalicelib/deletion.py``) deletes it last, so its name stays taken until nothing is left.

``DynamoDBUserRepository`` and its twin ``InMemoryUserRepository`` keep the same contract
(``tests/test_users.py`` runs one body against both).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from chalicelib.errors import Conflict, NotFound
from chalicelib.identity import Owner, name_key
from chalicelib.keys import (
    KEY_PART,
    NOT_MARKED,
    PROFILE,
    PROFILE_HOLDS,
    SideRead,
    SideWrite,
    batch_get,
    email_claim_key,
    is_condition_failure,
    name_claim_key,
    row_key,
    transact,
    user_key,
    user_pk,
)
from chalicelib.paging import MAX_READS, decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

Role = Literal["user", "admin"]
ReadT = TypeVar("ReadT")
DEFAULT_ROLE: Role = "user"


class UsernameTaken(Conflict):
    """A user with this username already exists."""

    message = "Username is already taken"


class EmailTaken(Conflict):
    """Another account has verified this address."""

    message = "This email address belongs to another account"


class UserNotFound(NotFound):
    """No user has this username."""

    message = "User not found"


class HashChanged(Exception):
    """The password hash (or the account holding the name) changed since it was read."""


@dataclass(frozen=True, kw_only=True)
class User:
    username: str
    # Immutable; None only on a row of the original system until its first use (``assign_id``).
    user_id: str | None
    password_hash: str = field(repr=False)
    created_at: str
    role: str = DEFAULT_ROLE
    updated_at: str | None = None
    # Access tokens carry the version they were issued at; bumping it revokes them all.
    token_version: int = 0
    email: str | None = None
    email_verified: bool = False
    disabled: bool = False
    # Set with the second factor, in the same transaction (``chalicelib/mfa.py``).
    mfa_enabled: bool = False
    # When the account was marked deleted (``mark_deleted``); its purge is under way.
    deleted_at: str | None = None

    @property
    def verified_email(self) -> str | None:
        """Where notices about the account go: its address, once verified."""
        return self.email if self.email_verified else None

    @property
    def owner(self) -> Owner:
        if self.user_id is None:
            raise ValueError(f"{self.username} has no id yet")
        return Owner(self.username, self.user_id)


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    cursor: str | None


class UserRepository(Protocol):
    def add(self, user: User, *, along: Sequence[SideWrite] = ()) -> None:
        """Store a new user and claim its name, with the rows ``along``, in one round trip;
        ``UsernameTaken`` if the name exists in any case."""

    def get(self, username: str, *, marked: bool = False) -> User | None:
        """The profile stored under exactly this name; one marked deleted only if ``marked``."""

    def find(self, login: str) -> User | None:
        """The profile of this name as stored, else of the name that differs only in case."""

    def find_with(
        self, login: str, along: Sequence[SideRead[ReadT]]
    ) -> tuple[User | None, list[ReadT]]:
        """``find``, and the rows ``along`` (in the order given) in the same read. A name typed
        in another case than stored costs one more read (the claim names the profile)."""

    def find_by_email(self, address: str) -> User | None:
        """The account that has verified ``address``."""

    def set_email(self, owner: Owner, address: str, *, updated_at: str) -> None:
        """Set an unverified address (releasing the verified one it replaces); ``UserNotFound``
        if the account is gone."""

    def verify_email(self, owner: Owner, address: str, *, updated_at: str) -> bool:
        """Mark the account's address verified and claim it; False if the account is gone or
        has another address now, ``EmailTaken`` if another account holds it."""

    def assign_id(self, username: str, user_id: str, *, current: User | None = None) -> User:
        """Give a row of the original system its id (kept if it has one meanwhile) and claim its
        name if nobody has; ``UserNotFound`` if it is gone. With the row as just read
        (``current``), both writes usually take one round trip."""

    def replace_password_hash(self, username: str, *, old: str, new: str, updated_at: str) -> bool:
        """Swap the hash only if it is still ``old``; False when it was not."""

    def change_password(self, owner: Owner, *, new_hash: str, updated_at: str) -> int:
        """Set a new hash and bump the token version; return the new version."""

    def bump_token_version(self, owner: Owner, *, updated_at: str) -> int:
        """Revoke every access token issued so far; return the new version."""

    def set_access(
        self, username: str, *, role: str | None, disabled: bool | None, updated_at: str
    ) -> User:
        """Change the role and/or the disabled flag; raise ``UserNotFound`` if there is none."""

    def list(self, *, limit: int, cursor: str | None) -> UserPage:
        """Every profile, a page at a time, in no particular order (for administrators)."""

    def mark_deleted(self, owner: Owner, *, deleted_at: str) -> bool:
        """Mark the account deleted and revoke its tokens (the token version rises), in one
        conditional write; False if it was marked already, ``UserNotFound`` if it is gone."""


class DynamoDBUserRepository:
    """Profile rows (``keys.user_key``), their attributes named as the original wrote them."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, user: User, *, along: Sequence[SideWrite] = ()) -> None:
        if user.user_id is None:
            raise ValueError("a new user needs an id")
        item: dict[str, Any] = {
            **user_key(user.username),
            "userId": user.user_id,
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
        if user.email is not None:
            item["email"] = user.email
            item["emailVerified"] = False
        folded = name_key(user.username)
        # The conditions make the writes themselves the uniqueness check, so concurrent signups
        # of one name, in any case, cannot both succeed.
        writes: list[dict[str, Any]] = [
            {"Put": self._new(item)},
            {"Put": self._new(_claim(user.username, user.user_id))},
        ]
        if folded != user.username:
            # A row of the original system under the folded name has no claim row of its own.
            writes.append({"ConditionCheck": self._new({}, key=user_key(folded))})
        if transact(self._table, writes, along) is not None:
            raise UsernameTaken(user.username)

    def get(self, username: str, *, marked: bool = False) -> User | None:
        response = self._table.get_item(Key=user_key(username), ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else _shown(user_from_item(item), marked=marked)

    def find(self, login: str) -> User | None:
        return self.find_with(login, [])[0]

    def find_with(
        self, login: str, along: Sequence[SideRead[ReadT]]
    ) -> tuple[User | None, list[ReadT]]:
        exact, claim = user_key(login), name_claim_key(name_key(login))
        rows = batch_get(self._table, [exact, claim, *(side.key() for side in along)])
        found = [side.parse(rows.get(row_key(side.key()))) for side in along]
        stored = rows.get(row_key(exact))
        if stored is not None and DELETED_AT not in stored:
            return user_from_item(stored), found
        claimed = rows.get(row_key(claim))
        if claimed is None:
            return None, found
        user = self.get(str(claimed["username"]))
        # A claim outlives its profile only between the two deletes of a purge.
        return (user if user is not None and user.user_id == claimed["userId"] else None), found

    def find_by_email(self, address: str) -> User | None:
        claim = self._table.get_item(Key=email_claim_key(address), ConsistentRead=True).get("Item")
        if claim is None:
            return None
        user = self.get(str(claim["username"]))
        return user if _holds(user, claim, address) else None

    def set_email(self, owner: Owner, address: str, *, updated_at: str) -> None:
        try:
            response = self._table.update_item(
                Key=user_key(owner.username),
                UpdateExpression="SET email = :email, emailVerified = :no, updatedAt = :now",
                ConditionExpression=PROFILE_HOLDS,
                ExpressionAttributeValues={
                    ":email": address,
                    ":no": False,
                    ":now": updated_at,
                    ":id": owner.user_id,
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise UserNotFound(owner.username) from exc
            raise
        old = response.get("Attributes", {})
        if old.get("emailVerified") is True and "email" in old:
            self._release_email(str(old["email"]), owner.user_id)

    def verify_email(self, owner: Owner, address: str, *, updated_at: str) -> bool:
        claim = {**email_claim_key(address), "userId": owner.user_id, "username": owner.username}
        put: dict[str, Any] = {
            "TableName": self._table.name,
            "Item": claim,
            "ConditionExpression": "attribute_not_exists(#pk) OR userId = :id",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
            "ExpressionAttributeValues": {":id": owner.user_id},
        }
        for _ in range(2):
            writes: list[dict[str, Any]] = [
                {"Put": put},
                {
                    "Update": {
                        "TableName": self._table.name,
                        "Key": user_key(owner.username),
                        "UpdateExpression": "SET emailVerified = :yes, updatedAt = :now",
                        "ConditionExpression": f"userId = :id AND email = :email AND {NOT_MARKED}",
                        "ExpressionAttributeValues": {
                            ":yes": True,
                            ":now": updated_at,
                            ":id": owner.user_id,
                            ":email": address,
                        },
                    }
                },
            ]
            try:
                self._table.meta.client.transact_write_items(TransactItems=cast("Any", writes))
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons[1:2] == ["ConditionalCheckFailed"]:
                    return False
                if reasons[:1] != ["ConditionalCheckFailed"]:
                    raise
                held = self._table.get_item(Key=email_claim_key(address), ConsistentRead=True)
                stale = held.get("Item")
                if stale is None or _holds(self.get(str(stale["username"])), stale, address):
                    raise EmailTaken(address) from exc
                # The claim outlived its account (a purge interrupted between two deletes):
                # take it over, on the condition that it is still that stale one.
                put = {
                    **put,
                    "ConditionExpression": "userId = :stale",
                    "ExpressionAttributeValues": {":stale": str(stale["userId"])},
                }
                del put["ExpressionAttributeNames"]
                continue
            return True
        raise EmailTaken(address)

    def _release_email(self, address: str, user_id: str) -> None:
        try:
            self._table.delete_item(
                Key=email_claim_key(address),
                ConditionExpression="userId = :id",
                ExpressionAttributeValues={":id": user_id},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    def assign_id(self, username: str, user_id: str, *, current: User | None = None) -> User:
        if current is not None:
            names = {"#pk": PARTITION_KEY}
            failed = transact(
                self._table,
                [
                    {
                        "Update": {
                            "Key": user_key(username),
                            "UpdateExpression": "SET userId = :id",
                            "ConditionExpression": _UNASSIGNED,
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": {":id": user_id},
                        }
                    },
                    {
                        "Put": {
                            **self._new(_claim(username, user_id)),
                            "TableName": self._table.name,
                        }
                    },
                ],
            )
            if failed is None:
                return replace(current, user_id=user_id)
            # Assigned or gone meanwhile, or the claim is another row's: one call at a time.
        try:
            response = self._table.update_item(
                Key=user_key(username),
                UpdateExpression="SET userId = :id",
                ConditionExpression=_UNASSIGNED,
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues={":id": user_id},
                ReturnValues="ALL_NEW",
            )
            user = user_from_item(response["Attributes"])
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            # Another request assigned one first (or the row is gone): theirs stands.
            found = self.get(username)
            if found is None:
                raise UserNotFound(username) from exc
            return found
        try:
            # Two rows of the original system may differ only in case: the first one used keeps
            # the claim, and both keep logging in under their exact names.
            self._table.put_item(
                Item=_claim(username, user_id),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
        return user

    def _new(self, item: dict[str, Any], *, key: dict[str, str] | None = None) -> dict[str, Any]:
        write: dict[str, Any] = {
            "TableName": self._table.name,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }
        if key is None:
            write["Item"] = item
        else:
            write["Key"] = key
        return write

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

    def change_password(self, owner: Owner, *, new_hash: str, updated_at: str) -> int:
        return self._update_owned(
            owner,
            "SET passwordHash = :hash, updatedAt = :now ADD tokenVersion :one",
            {":hash": new_hash, ":now": updated_at, ":one": 1},
        )

    def bump_token_version(self, owner: Owner, *, updated_at: str) -> int:
        return self._update_owned(
            owner, "SET updatedAt = :now ADD tokenVersion :one", {":now": updated_at, ":one": 1}
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
                ConditionExpression=f"attribute_exists(#pk) AND {NOT_MARKED}",
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
        scan: dict[str, Any] = {
            "FilterExpression": Attr(SORT_KEY).eq(PROFILE) & Attr(DELETED_AT).not_exists()
        }
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

    def mark_deleted(self, owner: Owner, *, deleted_at: str) -> bool:
        try:
            self._table.update_item(
                Key=user_key(owner.username),
                UpdateExpression="SET deletedAt = :now, updatedAt = :now ADD tokenVersion :one",
                ConditionExpression=PROFILE_HOLDS,
                ExpressionAttributeValues={":now": deleted_at, ":one": 1, ":id": owner.user_id},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            current = self.get(owner.username, marked=True)
            if current is None or current.user_id != owner.user_id:
                raise UserNotFound(owner.username) from exc
            return False
        return True

    def _update_owned(self, owner: Owner, expression: str, values: dict[str, Any]) -> int:
        try:
            # The condition stops an update from creating a half profile for a deleted user, or
            # from reaching a new account that took the name.
            response = self._table.update_item(
                Key=user_key(owner.username),
                UpdateExpression=expression,
                ConditionExpression=PROFILE_HOLDS,
                ExpressionAttributeValues={**values, ":id": owner.user_id},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise UserNotFound(owner.username) from exc
            raise
        return int(str(response["Attributes"]["tokenVersion"]))


class InMemoryUserRepository:
    """A thread-safe fake with the same semantics as the DynamoDB repository."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        # Folded name -> (username, user id), as the claim rows hold them; likewise addresses.
        self._claims: dict[str, tuple[str, str]] = {}
        self._emails: dict[str, tuple[str, str]] = {}
        self._lock = threading.RLock()

    def add(self, user: User, *, along: Sequence[SideWrite] = ()) -> None:
        if user.user_id is None:
            raise ValueError("a new user needs an id")
        folded = name_key(user.username)
        with self._lock:
            if user.username in self._users or folded in self._claims or folded in self._users:
                raise UsernameTaken(user.username)
            for side in along:
                side.apply()
            self._users[user.username] = user
            self._claims[folded] = (user.username, user.user_id)

    def get(self, username: str, *, marked: bool = False) -> User | None:
        with self._lock:
            user = self._users.get(username)
            return None if user is None else _shown(user, marked=marked)

    def find_with(
        self, login: str, along: Sequence[SideRead[ReadT]]
    ) -> tuple[User | None, list[ReadT]]:
        return self.find(login), [side.read() for side in along]

    def find(self, login: str) -> User | None:
        with self._lock:
            exact = self.get(login)
            if exact is not None:
                return exact
            claimed = self._claims.get(name_key(login))
            if claimed is None:
                return None
            user = self.get(claimed[0])
            return user if user is not None and user.user_id == claimed[1] else None

    def assign_id(self, username: str, user_id: str, *, current: User | None = None) -> User:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise UserNotFound(username)
            if user.user_id is not None:
                return user
            user = replace(user, user_id=user_id)
            self._users[username] = user
            self._claims.setdefault(name_key(username), (username, user_id))
            return user

    def find_by_email(self, address: str) -> User | None:
        with self._lock:
            claim = self._emails.get(address.lower())
            user = None if claim is None else self.get(claim[0])
            return user if claim is not None and _held(user, claim[1], address) else None

    def set_email(self, owner: Owner, address: str, *, updated_at: str) -> None:
        with self._lock:
            user = self._owned(owner)
            self._release_email(user)
            self._users[owner.username] = replace(
                user, email=address, email_verified=False, updated_at=updated_at
            )

    def verify_email(self, owner: Owner, address: str, *, updated_at: str) -> bool:
        with self._lock:
            user = self.get(owner.username)
            if user is None or user.user_id != owner.user_id or user.email != address:
                return False
            holder, held_by = self._emails.get(address.lower(), ("", owner.user_id))
            if held_by != owner.user_id and _held(self._users.get(holder), held_by, address):
                raise EmailTaken(address)
            self._emails[address.lower()] = (owner.username, owner.user_id)
            self._users[owner.username] = replace(user, email_verified=True, updated_at=updated_at)
            return True

    def _release_email(self, user: User) -> int:
        key = (user.email or "").lower()
        if user.email_verified and self._emails.get(key, ("", ""))[1] == user.user_id:
            del self._emails[key]
            return 1
        return 0

    def _owned(self, owner: Owner) -> User:
        user = self.get(owner.username)
        if user is None or user.user_id != owner.user_id:
            raise UserNotFound(owner.username)
        return user

    def add_legacy(self, user: User) -> None:
        """A row as the original system wrote it: no id, no claim."""
        with self._lock:
            self._users[user.username] = replace(user, user_id=None)

    def replace_password_hash(self, username: str, *, old: str, new: str, updated_at: str) -> bool:
        with self._lock:
            user = self._users.get(username)
            if user is None or user.password_hash != old:
                return False
            self._users[username] = replace(user, password_hash=new, updated_at=updated_at)
            return True

    def change_password(self, owner: Owner, *, new_hash: str, updated_at: str) -> int:
        with self._lock:
            version = self._bump(owner, updated_at=updated_at)
            username = owner.username
            self._users[username] = replace(self._users[username], password_hash=new_hash)
            return version

    def bump_token_version(self, owner: Owner, *, updated_at: str) -> int:
        return self._bump(owner, updated_at=updated_at)

    def set_access(
        self, username: str, *, role: str | None, disabled: bool | None, updated_at: str
    ) -> User:
        with self._lock:
            user = self.get(username)
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
            keyed = sorted(
                (user_pk(name), user)
                for name, user in self._users.items()
                if user.deleted_at is None
            )
        if cursor is not None:
            position = decode_cursor(cursor, {"pk": KEY_PART, "sk": KEY_PART})
            after = (position["pk"], position["sk"])
            keyed = [(pk, user) for pk, user in keyed if (pk, PROFILE) > after]
        users = [user for _, user in keyed[:limit]]
        if len(keyed) > limit:
            return UserPage(users, _cursor(keyed[limit - 1][0], PROFILE))
        return UserPage(users, None)

    def mark_deleted(self, owner: Owner, *, deleted_at: str) -> bool:
        with self._lock:
            user = self._users.get(owner.username)
            if user is None or user.user_id != owner.user_id:
                raise UserNotFound(owner.username)
            if user.deleted_at is not None:
                return False
            self._users[owner.username] = replace(
                user,
                deleted_at=deleted_at,
                updated_at=deleted_at,
                token_version=user.token_version + 1,
            )
            return True

    def release_claims(self, owner: Owner, *, email: str | None) -> int:
        """Forget the name's claim and the address's claim (``email``, if any) while they are
        the account's; how many went."""
        with self._lock:
            released = 0
            folded = name_key(owner.username)
            if self._claims.get(folded, ("", ""))[1] == owner.user_id:
                del self._claims[folded]
                released += 1
            address = (email or "").lower()
            if email is not None and self._emails.get(address, ("", ""))[1] == owner.user_id:
                del self._emails[address]
                released += 1
            return released

    def delete_profile(self, owner: Owner) -> int:
        """Forget the profile if it holds the owner's id; 1 if it did, else 0."""
        with self._lock:
            user = self._users.get(owner.username)
            if user is None or user.user_id != owner.user_id:
                return 0
            del self._users[owner.username]
            return 1

    def _bump(self, owner: Owner, *, updated_at: str) -> int:
        username = owner.username
        with self._lock:
            user = self.get(username)
            if user is None or user.user_id != owner.user_id:
                raise UserNotFound(username)
            version = user.token_version + 1
            self._users[username] = replace(user, token_version=version, updated_at=updated_at)
            return version

    def holds(self, owner: Owner) -> bool:
        """Whether the profile of ``owner.username`` exists, holds ``owner.user_id`` and is not
        marked deleted (``keys.PROFILE_HOLDS``)."""
        with self._lock:
            user = self.get(owner.username)
            return user is not None and user.user_id == owner.user_id

    def set_mfa_enabled(self, owner: Owner, enabled: bool) -> bool:
        """Set the profile's MFA flag if it holds the owner's id; False (nothing set) if not."""
        with self._lock:
            if not self.holds(owner):
                return False
            self._users[owner.username] = replace(self._users[owner.username], mfa_enabled=enabled)
            return True


_UNASSIGNED = "attribute_exists(#pk) AND attribute_not_exists(userId)"
DELETED_AT = "deletedAt"


@dataclass(frozen=True)
class HashUpgrade:
    """A login's rehash of the password, written along with its session (in place of the
    check that the profile holds the account id); ``HashChanged`` if the hash changed since."""

    repository: UserRepository
    owner: Owner
    old: str = field(repr=False)
    new: str = field(repr=False)
    updated_at: str

    def transact_item(self) -> dict[str, Any]:
        return {
            "Update": {
                "Key": user_key(self.owner.username),
                "UpdateExpression": "SET passwordHash = :new, updatedAt = :now",
                "ConditionExpression": f"userId = :id AND passwordHash = :old AND {NOT_MARKED}",
                "ExpressionAttributeValues": {
                    ":new": self.new,
                    ":old": self.old,
                    ":now": self.updated_at,
                    ":id": self.owner.user_id,
                },
            }
        }

    def refusal(self) -> Exception:
        return HashChanged(self.owner.username)

    def apply(self) -> None:
        current = self.repository.get(self.owner.username)
        if current is None or current.user_id != self.owner.user_id:
            raise self.refusal()
        username = self.owner.username
        if not self.repository.replace_password_hash(
            username, old=self.old, new=self.new, updated_at=self.updated_at
        ):
            raise self.refusal()


def _shown(user: User, *, marked: bool) -> User | None:
    return user if marked or user.deleted_at is None else None


def _cursor(pk: Any, sk: Any) -> str:
    return encode_cursor({"pk": str(pk), "sk": str(sk)})


def _held(user: User | None, user_id: str, address: str) -> bool:
    """Whether the account still holds the address its claim names."""
    return (
        user is not None
        and user.user_id == user_id
        and user.deleted_at is None
        and user.email_verified
        and (user.email or "").lower() == address.lower()
    )


def _holds(user: User | None, claim: Mapping[str, Any], address: str) -> bool:
    return _held(user, str(claim["userId"]), address)


def _claim(username: str, user_id: str) -> dict[str, Any]:
    return {**name_claim_key(name_key(username)), "username": username, "userId": user_id}


def user_from_item(item: Mapping[str, Any]) -> User:
    """A profile row, as the original system or this one wrote it."""
    return User(
        username=str(item["username"]),
        user_id=str(item["userId"]) if "userId" in item else None,
        password_hash=str(item["passwordHash"]),
        created_at=str(item["createdAt"]),
        # Rows written by the original system have no role.
        role=str(item.get("role", DEFAULT_ROLE)),
        updated_at=str(item["updatedAt"]) if "updatedAt" in item else None,
        token_version=int(str(item.get("tokenVersion", 0))),
        email=str(item["email"]) if "email" in item else None,
        email_verified=item.get("emailVerified") is True,
        disabled=item.get("disabled") is True,
        mfa_enabled=item.get("mfaEnabled") is True,
        deleted_at=str(item[DELETED_AT]) if DELETED_AT in item else None,
    )
