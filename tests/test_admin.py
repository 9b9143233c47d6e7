"""User administration, complete account deletion, and the first-admin command."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from chalice.test import Client

import app as app_module
from chalicelib.keys import user_key
from tests.conftest import Api, every_page, promote
from tests.purging import finish_deletion
from tools import admin as admin_command
from tools.localaws import Resources

PASSWORD = "correct horse battery"
ADMIN_ROUTES = [
    ("GET", "/users", None),
    ("POST", "/users", {"username": "newbie", "password": PASSWORD}),
    ("GET", "/users/alice", None),
    ("PUT", "/users/alice", {"role": "admin", "disabled": False}),
    ("PATCH", "/users/alice", {"role": "admin"}),
    ("DELETE", "/users/alice", None),
    ("GET", "/users/alice/events", None),
    ("GET", "/admin/items?status=active", None),
]


def call(api: Api, token: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if body is None:
        return api.client.http.request(method, path, headers=headers)
    headers["Content-Type"] = "application/json"
    return api.client.http.request(method, path, headers=headers, body=json.dumps(body).encode())


def partition(table: Any, username: str) -> list[Any]:
    return list(table.query(KeyConditionExpression=Key("pk").eq(f"USER#{username}"))["Items"])


@pytest.fixture
def root(api: Api, table: Any) -> str:
    api.signup("root", PASSWORD)
    promote(table, "root")
    return api.login("root", PASSWORD)


@pytest.fixture
def alice(api: Api) -> str:
    api.signup("alice", PASSWORD)
    return api.login("alice", PASSWORD)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_every_admin_route_refuses_a_normal_user(
    api: Api, alice: str, method: str, path: str, body: Any
) -> None:
    response = call(api, alice, method, path, body)
    assert response.status_code == 403
    assert response.json_body == {"message": "Administrator role required"}


@pytest.fixture
def cached_authorizer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """API Gateway's authorizer cache: the first answer for a token is reused for every later
    request with it (deployed, for up to AUTHORIZER_TTL_SECONDS). Lists the tokens it ran for."""
    answers: dict[str, Any] = {}
    ran: list[str] = []
    authorize = app_module.bearer.func

    def cached(auth_request: Any) -> Any:
        if auth_request.token not in answers:
            ran.append(auth_request.token)
            answers[auth_request.token] = authorize(auth_request)
        return answers[auth_request.token]

    monkeypatch.setattr(app_module.bearer, "func", cached)
    return ran


@pytest.mark.parametrize(
    ("change", "value"),
    [("role", "user"), ("disabled", True)],
    ids=["demoted", "disabled"],
)
def test_an_admin_route_reads_the_role_afresh_despite_the_cached_authorizer(
    api: Api, table: Any, cached_authorizer: list[str], change: str, value: Any
) -> None:
    api.signup("root", PASSWORD)
    promote(table, "root")
    root = api.login("root", PASSWORD)
    assert call(api, root, "GET", "/users").status_code == 200
    table.update_item(
        Key=user_key("root"),
        UpdateExpression="SET #field = :value",
        ExpressionAttributeNames={"#field": change},
        ExpressionAttributeValues={":value": value},
    )
    # The authorizer is not asked again: its cached context still says "admin".
    denied = call(api, root, "POST", "/users", {"username": "mole", "password": PASSWORD})
    assert cached_authorizer == [f"Bearer {root}"]
    assert denied.status_code == 403
    assert denied.json_body == {"message": "Administrator role required"}
    assert table.get_item(Key=user_key("mole")).get("Item") is None
    for method, path, body in ADMIN_ROUTES:
        assert call(api, root, method, path, body).status_code == 403, (method, path)


def test_a_deleted_admin_is_refused_despite_the_cached_authorizer(
    api: Api, root: str, table: Any, cached_authorizer: list[str]
) -> None:
    assert call(api, root, "GET", "/users").status_code == 200
    table.delete_item(Key=user_key("root"))
    assert call(api, root, "GET", "/users").status_code == 403
    assert cached_authorizer == [f"Bearer {root}"]


def test_an_admin_marked_deleted_is_refused_and_deleting_again_succeeds_despite_the_cache(
    api: Api, client: Client, root: str, table: Any, cached_authorizer: list[str]
) -> None:
    assert call(api, root, "GET", "/users").status_code == 200
    assert call(api, root, "DELETE", "/auth/user", {"password": PASSWORD}).status_code == 202
    assert call(api, root, "GET", "/users").status_code == 403
    # The same token, its authorizer answer cached: deleting again is the same success.
    assert call(api, root, "DELETE", "/auth/user", {"password": PASSWORD}).status_code == 202
    finish_deletion(client, table, "root")
    assert call(api, root, "DELETE", "/auth/user", {"password": PASSWORD}).status_code == 202
    assert cached_authorizer == [f"Bearer {root}"]
    assert partition(table, "root") == []


def test_create_read_and_list_users(api: Api, root: str, table: Any) -> None:
    created = call(
        api, root, "POST", "/users", {"username": "ops", "password": PASSWORD, "role": "admin"}
    )
    assert created.status_code == 201
    assert (created.json_body["username"], created.json_body["role"]) == ("ops", "admin")
    assert (
        call(api, root, "POST", "/users", {"username": "ops", "password": PASSWORD}).status_code
        == 409
    )
    weak = call(api, root, "POST", "/users", {"username": "weak", "password": "password"})
    assert weak.status_code == 400
    # A row the original system wrote: no role, no updatedAt.
    table.put_item(
        Item={
            **user_key("legacy"),
            "username": "legacy",
            "passwordHash": "x:y",
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    )
    for n in range(4):
        call(api, root, "POST", "/users", {"username": f"user{n}", "password": PASSWORD})

    def fetch(cursor: str | None) -> Any:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        return call(api, root, "GET", f"/users{query}").json_body

    seen = [user["username"] for user in every_page(fetch, "users")]
    assert sorted(seen) == ["legacy", "ops", "root", "user0", "user1", "user2", "user3"]
    legacy = call(api, root, "GET", "/users/legacy").json_body
    assert legacy == {
        "username": "legacy",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "role": "user",
        "mfaEnabled": False,
        "disabled": False,
        "emailVerified": False,
    }
    assert "passwordHash" not in str(call(api, root, "GET", "/users").body)
    assert call(api, root, "GET", "/users/nobody").status_code == 404


def test_disabling_stops_tokens_at_once_and_role_changes_apply(
    api: Api, root: str, alice: str
) -> None:
    assert (
        call(api, root, "PATCH", "/users/alice", {"disabled": True}).json_body["disabled"] is True
    )
    assert api.get("/auth/user", alice).status_code == 403
    assert api.post("/auth/login", {"username": "alice", "password": PASSWORD}).status_code == 403
    assert call(api, root, "PUT", "/users/alice", {"role": "admin"}).status_code == 400
    call(api, root, "PUT", "/users/alice", {"role": "admin", "disabled": False})
    token = api.login("alice", PASSWORD)
    assert call(api, token, "GET", "/users").status_code == 200
    assert call(api, root, "PATCH", "/users/nobody", {"role": "admin"}).status_code == 404
    events = call(api, root, "GET", "/auth/events").json_body["events"]
    assert [e["type"] for e in events if e["type"].startswith("admin_")] == [
        "admin_update_user"
    ] * 2


def test_deleting_a_user_removes_everything_and_is_idempotent(
    api: Api,
    client: Client,
    root: str,
    alice: str,
    table: Any,
    aws: boto3.Session,
    resources: Resources,
) -> None:
    for n in range(30):
        response = call(api, alice, "POST", "/items", {"name": f"item {n}"})
        assert response.status_code == 201
    s3 = aws.client("s3")
    for name in ("images/1/a.png", "documents/2/b.pdf"):
        s3.put_object(Bucket=resources.uploads_bucket, Key=f"uploads/users/alice/{name}", Body=b"x")
    # Neighbours that a careless prefix would catch: "alicia", and a legacy name "alice/x".
    s3.put_object(
        Bucket=resources.uploads_bucket, Key="uploads/users/alicia/images/3/c.png", Body=b"x"
    )
    s3.put_object(
        Bucket=resources.uploads_bucket, Key="uploads/users/alice%2Fx/images/4/d.png", Body=b"x"
    )
    assert len(partition(table, "alice")) > 30

    assert call(api, root, "DELETE", "/users/alice").status_code == 202
    assert api.get("/auth/user", alice).status_code == 403
    assert call(api, root, "DELETE", "/users/alice").status_code == 202
    finish_deletion(client, table, "alice")
    assert partition(table, "alice") == []
    remaining = s3.list_objects_v2(Bucket=resources.uploads_bucket).get("Contents", [])
    assert sorted(entry["Key"] for entry in remaining) == [
        "uploads/users/alice%2Fx/images/4/d.png",
        "uploads/users/alicia/images/3/c.png",
    ]
    assert api.get("/auth/user", alice).status_code == 403
    assert call(api, alice, "POST", "/items", {"name": "after"}).status_code == 403
    assert call(api, root, "DELETE", "/users/alice").status_code == 202


def test_users_delete_their_own_account_with_their_password(
    api: Api, client: Client, alice: str, table: Any
) -> None:
    call(api, alice, "POST", "/items", {"name": "mine"})
    wrong = call(api, alice, "DELETE", "/auth/user", {"password": "not my password"})
    assert wrong.status_code == 401
    assert call(api, alice, "DELETE", "/auth/user", {}).status_code == 400
    assert partition(table, "alice") != []
    done = call(api, alice, "DELETE", "/auth/user", {"password": PASSWORD})
    assert done.status_code == 202
    assert "Max-Age=0" in done.headers["Set-Cookie"]
    # Gone at once; its rows go with the purge worker.
    assert api.get("/auth/user", alice).status_code == 403
    assert api.post("/auth/login", {"username": "alice", "password": PASSWORD}).status_code == 401
    finish_deletion(client, table, "alice")
    assert partition(table, "alice") == []


def test_the_first_admin_command_creates_or_promotes(
    table: Any,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TABLE_NAME", resources.table_name)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long admin passphrase\n"))
    assert admin_command.main(["boss"]) == 0
    assert table.get_item(Key=user_key("boss"))["Item"]["role"] == "admin"
    assert "created administrator boss" in capsys.readouterr().out

    table.put_item(
        Item={
            **user_key("worker"),
            "username": "worker",
            "passwordHash": "x:y",
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    )
    assert admin_command.main(["worker"]) == 0
    assert table.get_item(Key=user_key("worker"))["Item"]["role"] == "admin"

    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    assert admin_command.main(["weakling"]) == 2
    assert "Item" not in table.get_item(Key=user_key("weakling"))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/users", {"username": "x", "password": PASSWORD}),
        ("POST", "/users", {"username": "valid", "password": PASSWORD, "role": "owner"}),
        ("POST", "/users", {"username": "valid", "password": PASSWORD, "extra": 1}),
        ("POST", "/users", ["not", "an", "object"]),
        ("PATCH", "/users/alice", {"role": "superuser"}),
        ("PATCH", "/users/alice", {"disabled": "yes"}),
        ("PUT", "/users/alice", {"disabled": True}),
        ("GET", "/users?limit=0", None),
        ("GET", "/users?cursor=not-a-cursor", None),
    ],
)
def test_bad_admin_requests_are_400(
    api: Api, root: str, alice: str, method: str, path: str, body: Any
) -> None:
    response = call(api, root, method, path, body)
    assert response.status_code == 400
    assert response.json_body["message"]
