"""Account deletion that always finishes: the mark (the account is gone at once, its name still
taken), the purge (one contract for the partition repositories, DynamoDB under moto and the
in-memory twin), the purge worker, and each AWS call of the routes and of the worker failing
once, in turn."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key
from chalice.test import Client

import app as app_module
from chalicelib.deletion import (
    AccountNotMarked,
    AccountPurge,
    DynamoDBPartitionRepository,
    InvalidPurgeEvent,
    deleted_account,
)
from chalicelib.events import Event
from chalicelib.identity import Owner, name_key
from chalicelib.items import Item
from chalicelib.keys import OwnerMissing, name_claim_key, user_key
from chalicelib.mail import InMemoryMailer
from chalicelib.sessions import RefreshToken, Session
from chalicelib.stores import Stores
from chalicelib.uploads import Upload
from chalicelib.users import UsernameTaken, UserNotFound
from tests.conftest import Api, FakeClock, account, owner_of, promote
from tests.purging import (
    Faults,
    delete_and_purge,
    deleted_event,
    finish_deletion,
    marked,
    run_purge_worker,
)
from tools.localaws import Resources

NOW = "2026-01-01T00:00:00.000Z"
PASSWORD = "correct horse battery"
SIGNUP = Event(kind="signup", at=NOW, ip="203.0.113.7", user_agent="pytest", details={})


def fill(stores: Stores, name: str, *, owner: Owner | None = None, n: int = 0) -> None:
    """One row of every kind the account can own, and a verified address."""
    owner = owner or owner_of(name)
    stores.users.add(replace(account(name), user_id=owner.user_id))
    session = Session(
        username=name,
        user_id=owner.user_id,
        session_id=f"{n}" * 22,
        user_agent="pytest",
        created_at=1,
        last_used_at=1,
        expires_at=9,
        idle_expires_at=5,
        token_version=0,
    )
    stores.sessions.create(session, RefreshToken(username=name, secret=f"{n}" * 43))
    stores.items.add(item(owner, f"{n}" * 28))
    stores.uploads.add(
        Upload(
            owner=name,
            owner_id=owner.user_id,
            upload_id=f"{n}" * 28,
            kind="image",
            filename="a.png",
            content_type="image/png",
            size=1,
            key=f"uploads/users/{name}/images/{f'{n}' * 28}/a.png",
            status="pending",
            created_at=NOW,
        ),
        expires_at=10,
    )
    stores.events.add(owner, SIGNUP, expires_at=10)
    stores.users.set_email(owner, f"{name}@example.com", updated_at=NOW)
    assert stores.users.verify_email(owner, f"{name}@example.com", updated_at=NOW)


def item(owner: Owner, item_id: str) -> Item:
    return Item(
        owner=owner.username,
        owner_id=owner.user_id,
        item_id=item_id,
        name="n",
        created_at=NOW,
        updated_at=NOW,
    )


def holdings(stores: Stores, owner: Owner) -> list[int]:
    """How many sessions, items, uploads and events the account has."""
    return [
        len([s for s in stores.sessions.all(owner.username) if s.user_id == owner.user_id]),
        len(stores.items.list(owner, status=None, limit=10, cursor=None).items),
        len(stores.uploads.list(owner, limit=10, cursor=None).uploads),
        len(stores.events.list(owner, limit=10, cursor=None).events),
    ]


def purge_of(stores: Stores) -> AccountPurge:
    return AccountPurge(stores.users, stores.partitions)


class TestTheMark:
    def test_a_marked_account_counts_as_gone_but_keeps_its_name(self, stores: Stores) -> None:
        fill(stores, "alice")
        alice = owner_of("alice")
        assert stores.users.mark_deleted(alice, deleted_at=NOW)
        users = stores.users
        assert users.get("alice") is None
        assert users.find("alice") is None
        assert users.find("ALICE") is None
        assert users.find_by_email("alice@example.com") is None
        assert users.list(limit=10, cursor=None).users == []
        stored = users.get("alice", marked=True)
        assert stored is not None
        assert (stored.deleted_at, stored.token_version) == (NOW, 1)
        # Nothing changes it any more.
        with pytest.raises(UserNotFound):
            users.set_access("alice", role="admin", disabled=None, updated_at=NOW)
        with pytest.raises(UserNotFound):
            users.bump_token_version(alice, updated_at=NOW)
        assert not users.verify_email(alice, "alice@example.com", updated_at=NOW)
        # No row can be added to it any more (rows are written on that condition).
        with pytest.raises(OwnerMissing):
            stores.items.add(item(alice, "9" * 28))
        # Marking again is no change; a gone account cannot be marked.
        assert not users.mark_deleted(alice, deleted_at="2027-01-01T00:00:00.000Z")
        with pytest.raises(UserNotFound):
            users.mark_deleted(Owner("nobody", "0" * 32), deleted_at=NOW)
        # The name stays taken, in any case, until the purge has finished.
        for name in ("alice", "Alice", "ALICE"):
            with pytest.raises(UsernameTaken):
                users.add(replace(account(name), user_id="f" * 32))

    def test_the_mark_is_bound_to_the_id(self, stores: Stores) -> None:
        fill(stores, "alice")
        with pytest.raises(UserNotFound):
            stores.users.mark_deleted(Owner("alice", "f" * 32), deleted_at=NOW)
        assert stores.users.get("alice") is not None


class TestThePurge:
    def test_it_takes_every_row_claim_and_the_profile_and_only_that_accounts(
        self, stores: Stores
    ) -> None:
        fill(stores, "alice")
        fill(stores, "alicia", n=1)
        alice, alicia = owner_of("alice"), owner_of("alicia")
        # Session, refresh token, item, upload, event; the name and address claims; the profile.
        assert delete_and_purge(stores, alice) == 8
        assert stores.users.get("alice", marked=True) is None
        assert holdings(stores, alice) == [0, 0, 0, 0]
        assert purge_of(stores).purge(alice) == 0  # idempotent
        assert holdings(stores, alicia) == [1, 1, 1, 1]
        assert stores.users.find_by_email("alicia@example.com") is not None
        # Free again, name and address, in any case.
        stores.users.add(replace(account("Alice"), user_id="f" * 32))
        assert stores.users.find("alice") == replace(account("Alice"), user_id="f" * 32)
        bob = Owner("Alice", "f" * 32)
        stores.users.set_email(bob, "ALICE@example.com", updated_at=NOW)
        assert stores.users.verify_email(bob, "ALICE@example.com", updated_at=NOW)

    def test_it_refuses_a_live_account(self, stores: Stores) -> None:
        fill(stores, "alice")
        with pytest.raises(AccountNotMarked):
            purge_of(stores).purge(owner_of("alice"))
        assert holdings(stores, owner_of("alice")) == [1, 1, 1, 1]

    def test_a_late_purge_of_a_name_taken_again_takes_only_the_old_accounts_rows(
        self, stores: Stores
    ) -> None:
        old, new = owner_of("bob"), Owner("bob", "b" * 32)
        fill(stores, "bob")
        # A purge interrupted after the profile and the claims (as a version without the final
        # sweep could leave it), then the name registered again.
        stores.users.mark_deleted(old, deleted_at=NOW)
        stores.partitions.release_claims(old, email="bob@example.com")
        assert stores.partitions.delete_profile(old) == 1
        fill(stores, "bob", owner=new, n=2)
        assert purge_of(stores).purge(old) == 5
        assert holdings(stores, old) == [0, 0, 0, 0]
        assert holdings(stores, new) == [1, 1, 1, 1]
        assert stores.users.get("bob") is not None
        assert stores.users.find("BOB") is not None
        assert stores.users.find_by_email("bob@example.com") is not None

    def test_rows_written_by_a_request_in_flight_during_the_purge_go_too(
        self, stores: Stores, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fill(stores, "carol")
        carol = owner_of("carol")
        stores.users.mark_deleted(carol, deleted_at=NOW)
        delete_profile = stores.partitions.delete_profile

        def late_write_first(owner: Owner) -> int:
            # A request authorized before the mark logs an event after the purge's first sweep
            # (events are the rows written without a condition on the profile).
            stores.events.add(carol, SIGNUP, expires_at=10)
            return delete_profile(owner)

        monkeypatch.setattr(stores.partitions, "delete_profile", late_write_first)
        purge_of(stores).purge(carol)
        assert holdings(stores, carol) == [0, 0, 0, 0]


def test_the_dynamodb_purge_takes_rows_it_does_not_know_and_the_objects(
    table: Any, aws: boto3.Session, resources: Resources
) -> None:
    alice = owner_of("alice")
    profile = {"username": "alice", "userId": alice.user_id, "passwordHash": "h"}
    table.put_item(Item={**user_key("alice"), **profile, "createdAt": NOW, "deletedAt": NOW})
    # Kinds of row a later (or earlier) version may have written, stamped or not.
    table.put_item(Item={"pk": "USER#alice", "sk": "SOMETHING#1"})
    table.put_item(Item={"pk": "USER#alice", "sk": "SOMETHING#2", "userId": "0" * 32})
    table.put_item(Item={"pk": "USER#alicia", "sk": "SOMETHING#1"})
    s3 = aws.client("s3")
    for key in ("uploads/users/alice/images/1/a.png", "uploads/users/alicia/images/2/b.png"):
        s3.put_object(Bucket=resources.uploads_bucket, Key=key, Body=b"x")
    repository = DynamoDBPartitionRepository(table)
    users = Stores.dynamodb(table).users
    purge = AccountPurge(users, repository, s3=s3, bucket=resources.uploads_bucket)
    assert purge.purge(alice) == 4
    assert [row["pk"] for row in table.scan()["Items"]] == ["USER#alicia"]
    remaining = s3.list_objects_v2(Bucket=resources.uploads_bucket)["Contents"]
    assert [entry["Key"] for entry in remaining] == ["uploads/users/alicia/images/2/b.png"]
    assert purge.purge(alice) == 0


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"type": "item.created", "accountId": "a" * 32, "data": {"username": "alice"}},
        {"type": "account.deleted", "data": {"username": "alice"}},
        {"type": "account.deleted", "accountId": "", "data": {"username": "alice"}},
        {"type": "account.deleted", "accountId": "a" * 32, "data": {}},
        {"type": "account.deleted", "accountId": "a" * 32, "data": "alice"},
        {
            "type": "account.deleted",
            "accountId": "a" * 32,
            "username": "bob",
            "data": {"username": "alice"},
        },
    ],
)
def test_the_worker_refuses_anything_but_an_account_deleted_event(
    envelope: dict[str, Any],
) -> None:
    with pytest.raises(InvalidPurgeEvent):
        deleted_account(envelope)


def test_deleted_account_reads_the_envelope() -> None:
    assert deleted_account(deleted_event(Owner("alice", "a" * 32))) == Owner("alice", "a" * 32)


# Over HTTP, on the production wiring (moto).


def app_clients(dependencies: app_module.Dependencies) -> list[Any]:
    """Every AWS client the app's requests and workers use."""
    return [dependencies.table.meta.client, dependencies.s3, dependencies.secrets]


def mailed_token(mailbox: InMemoryMailer) -> str:
    found = re.search(r"\?token=([A-Za-z0-9_.%-]+)", mailbox.sent[-1].text)
    assert found is not None
    return found.group(1)


def delete_request(api: Api, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"password": PASSWORD}).encode()
    return api.client.http.request("DELETE", "/auth/user", headers=headers, body=body)


def admin_delete(api: Api, token: str, username: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    return api.client.http.request("DELETE", f"/users/{username}", headers=headers)


class World:
    """An account with something of every kind (items, an upload and its object, sessions,
    events, a verified address), and what is left of one afterwards."""

    def __init__(
        self,
        api: Api,
        table: Any,
        aws: boto3.Session,
        resources: Resources,
        mailbox: InMemoryMailer,
        clock: FakeClock,
    ) -> None:
        self.api, self.table, self.mailbox, self.clock = api, table, mailbox, clock
        self.s3 = aws.client("s3")
        self.bucket = resources.uploads_bucket

    def populated(self, name: str) -> str:
        """A new account ``name`` with data; its access token."""
        self.clock.advance(seconds=61)  # a fresh window of the per-IP limit
        body = {"username": name, "password": PASSWORD, "email": f"{name}@example.com"}
        assert self.api.post("/auth/signup", body).status_code == 201
        link = mailed_token(self.mailbox)
        assert self.api.post("/auth/email/verify", {"token": link}).status_code == 200
        token = self.api.login(name, PASSWORD)
        bearer = {"Authorization": f"Bearer {token}"}
        for n in range(2):
            assert self.api.post("/items", {"name": f"item {n}"}, bearer).status_code == 201
        upload = {"filename": "a.png", "contentType": "image/png", "size": 1, "kind": "image"}
        started = self.api.post("/uploads", upload, bearer)
        assert started.status_code == 201
        key = started.json_body["post"]["fields"]["key"]
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"x", ContentType="image/png")
        return token

    def rows_of(self, owner: Owner) -> list[Any]:
        partition = self.table.query(KeyConditionExpression=Key("pk").eq(f"USER#{owner.username}"))
        stamped = self.table.scan(FilterExpression=Attr("userId").eq(owner.user_id))
        claim = self.table.get_item(Key=name_claim_key(name_key(owner.username))).get("Item")
        return [*partition["Items"], *stamped["Items"], *([claim] if claim else [])]

    def objects_of(self, owner: Owner) -> list[Any]:
        prefix = f"uploads/users/{owner.username}/"
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return list(listed.get("Contents", []))

    def assert_gone_but_taken(self, name: str, token: str) -> None:
        """Marked: no token, no login, the name still taken."""
        assert self.api.get("/auth/user", token).status_code == 403
        login = {"username": name, "password": PASSWORD}
        assert self.api.post("/auth/login", login).status_code == 401
        assert self.api.post("/auth/signup", login).status_code == 409

    def assert_purged(self, owner: Owner, token: str) -> None:
        """Nothing left: no row, no object, no claim; the token refused, login 401, the name
        free again."""
        assert self.rows_of(owner) == []
        assert self.objects_of(owner) == []
        assert self.api.get("/auth/user", token).status_code in (401, 403)
        login = {"username": owner.username, "password": PASSWORD}
        assert self.api.post("/auth/login", login).status_code == 401
        self.api.signup(owner.username.upper(), PASSWORD)


@pytest.fixture
def world(
    api: Api,
    table: Any,
    aws: boto3.Session,
    resources: Resources,
    mailbox: InMemoryMailer,
    clock: FakeClock,
) -> World:
    return World(api, table, aws, resources, mailbox, clock)


def test_deleting_ones_account_marks_it_then_the_worker_purges_it(
    api: Api, client: Client, world: World, table: Any
) -> None:
    token = world.populated("alice")
    answer = delete_request(api, token)
    assert answer.status_code == 202
    assert answer.json_body == {"message": app_module.DELETED_ANSWER}
    assert "Max-Age=0" in answer.headers["Set-Cookie"]
    owner = marked(table, "alice")
    world.assert_gone_but_taken("alice", token)
    assert world.objects_of(owner) != []
    assert finish_deletion(client, table, "alice") == owner
    world.assert_purged(owner, token)
    # The queue may deliver the event again: nothing left to do, and the new account untouched.
    assert run_purge_worker(client, deleted_event(owner)) == []
    assert api.get("/auth/user", api.login("ALICE", PASSWORD)).status_code == 200


def test_each_aws_call_of_deleting_ones_account_failing_once(
    api: Api, client: Client, world: World, table: Any, dependencies: app_module.Dependencies
) -> None:
    def attempt(name: str, fail_at: int | None) -> Faults:
        token = world.populated(name)
        with Faults(app_clients(dependencies), fail_at=fail_at).installed() as faults:
            first = delete_request(api, token)
        assert first.status_code in (202, 503), first.json_body
        assert (first.status_code == 503) == (faults.failed is not None)
        if first.status_code == 503:
            # Nothing was marked: the same token still works, and the retry succeeds.
            assert table.get_item(Key=user_key(name))["Item"].get("deletedAt") is None
            assert delete_request(api, token).status_code == 202
        world.assert_gone_but_taken(name, token)
        world.assert_purged(finish_deletion(client, table, name), token)
        return faults

    calls = attempt("base", None).calls
    assert calls == [
        "dynamodb.BatchGetItem",  # the authorizer: the profile and the session
        "dynamodb.UpdateItem",  # the per-IP hit
        "dynamodb.GetItem",  # the attempt counted: the failures so far
        "dynamodb.UpdateItem",  # and the attempt
        "dynamodb.GetItem",  # the profile
        "dynamodb.DeleteItem",  # the throttle's failure row (password right)
        "dynamodb.UpdateItem",  # the mark
    ]
    for n, call in enumerate(calls):
        assert attempt(f"user{n}", n).failed == call


def test_each_aws_call_of_the_purge_worker_failing_once(
    api: Api, client: Client, world: World, table: Any, dependencies: app_module.Dependencies
) -> None:
    def marked_account(name: str) -> tuple[Owner, str]:
        token = world.populated(name)
        assert delete_request(api, token).status_code == 202
        return marked(table, name), token

    owner, token = marked_account("base")
    with Faults(app_clients(dependencies)).installed() as counted:
        assert run_purge_worker(client, deleted_event(owner)) == []
    world.assert_purged(owner, token)
    assert counted.calls == [
        "dynamodb.GetItem",  # the profile, marked, with the event's id
        "dynamodb.Query",  # the partition
        "dynamodb.BatchWriteItem",
        "s3.ListObjectsV2",
        "s3.DeleteObjects",
        "dynamodb.DeleteItem",  # the name's claim
        "dynamodb.DeleteItem",  # the address's claim
        "dynamodb.DeleteItem",  # the profile
        "dynamodb.Query",  # rows written meanwhile
    ]
    for n, call in enumerate(counted.calls):
        owner, token = marked_account(f"user{n}")
        with Faults(app_clients(dependencies), fail_at=n).installed() as faults:
            assert run_purge_worker(client, deleted_event(owner)) == ["m0"]
        assert faults.failed == call
        # The queue delivers the message again.
        assert run_purge_worker(client, deleted_event(owner)) == []
        world.assert_purged(owner, token)


def test_each_aws_call_of_an_administrators_deletion_failing_once(
    api: Api,
    client: Client,
    world: World,
    table: Any,
    dependencies: app_module.Dependencies,
) -> None:
    api.signup("root", PASSWORD)
    promote(table, "root")
    root = api.login("root", PASSWORD)

    def attempt(name: str, fail_at: int | None) -> Faults:
        token = world.populated(name)
        with Faults(app_clients(dependencies), fail_at=fail_at).installed() as faults:
            first = admin_delete(api, root, name)
        assert first.status_code in (202, 503), first.json_body
        assert (first.status_code == 503) == (faults.failed is not None)
        if first.status_code == 503:
            assert admin_delete(api, root, name).status_code == 202
        world.assert_gone_but_taken(name, token)
        world.assert_purged(finish_deletion(client, table, name), token)
        return faults

    calls = attempt("base", None).calls
    assert calls == [
        "dynamodb.BatchGetItem",  # the authorizer
        "dynamodb.GetItem",  # the caller still an administrator
        "dynamodb.GetItem",  # the profile
        "dynamodb.UpdateItem",  # the mark
        "dynamodb.PutItem",  # the administrator's event
    ]
    for n, call in enumerate(calls):
        assert attempt(f"user{n}", n).failed == call
    events = api.get("/auth/events?limit=100", root).json_body["events"]
    deleted = [e for e in events if e["type"] == "admin_delete_user"]
    assert len(deleted) == len(calls) + 1


def test_an_administrators_deletion_is_idempotent_and_hides_the_account(
    api: Api, client: Client, world: World, table: Any
) -> None:
    api.signup("root", PASSWORD)
    promote(table, "root")
    root = api.login("root", PASSWORD)
    token = world.populated("alice")
    bearer = {"Authorization": f"Bearer {root}"}
    assert admin_delete(api, root, "alice").status_code == 202
    assert admin_delete(api, root, "alice").status_code == 202
    assert api.get("/users/alice", root).status_code == 404
    listed = api.get("/users", root).json_body["users"]
    assert [user["username"] for user in listed] == ["root"]
    patched = api.client.http.request(
        "PATCH",
        "/users/alice",
        headers={**bearer, "Content-Type": "application/json"},
        body=json.dumps({"role": "admin"}).encode(),
    )
    assert patched.status_code == 404
    world.assert_gone_but_taken("alice", token)
    owner = finish_deletion(client, table, "alice")
    assert admin_delete(api, root, "alice").status_code == 202
    assert admin_delete(api, root, "nobody").status_code == 202
    world.assert_purged(owner, token)


def test_recovery_does_not_reach_a_marked_account(
    api: Api, world: World, mailbox: InMemoryMailer
) -> None:
    token = world.populated("dave")
    assert api.post("/auth/password/forgot", {"login": "dave"}).status_code == 202
    link = mailed_token(mailbox)
    assert delete_request(api, token).status_code == 202
    sent = len(mailbox.sent)
    for login in ("dave", "dave@example.com"):
        assert api.post("/auth/password/forgot", {"login": login}).status_code == 202
    assert len(mailbox.sent) == sent
    reset = api.post("/auth/password/reset", {"token": link, "password": "a new passphrase!"})
    assert reset.status_code == 400


def test_a_failing_message_fails_alone_in_its_batch(
    api: Api, client: Client, world: World, table: Any
) -> None:
    token = world.populated("erin")
    assert delete_request(api, token).status_code == 202
    owner = marked(table, "erin")
    live = world.populated("frank")
    frank = Owner("frank", str(table.get_item(Key=user_key("frank"))["Item"]["userId"]))
    failures = run_purge_worker(
        client, {"not": "an event"}, deleted_event(owner), deleted_event(frank)
    )
    # The poison message and the live account's are retried (then dead-lettered); erin's done.
    assert failures == ["m0", "m2"]
    world.assert_purged(owner, token)
    assert api.get("/auth/user", live).status_code == 200
