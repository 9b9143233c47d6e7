"""Stable identity over HTTP: a re-registered name inherits nothing, names are one in any case,
and rows of the original system keep working as stored."""

from __future__ import annotations

import json
from typing import Any

import jwt
from chalice.test import Client

from chalicelib.keys import name_claim_key, user_key
from tests.conftest import Api, node_scrypt_hashes
from tests.purging import finish_deletion

PASSWORD = "correct horse battery"


def call(api: Api, method: str, path: str, token: str, body: object | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = b"" if body is None else json.dumps(body).encode()
    return api.client.http.request(method, path, headers=headers, body=data)


def test_a_re_registered_name_inherits_no_token_session_item_or_event(
    api: Api, client: Client, table: Any
) -> None:
    api.signup("alice")
    old = api.post(
        "/auth/login", {"username": "alice", "password": PASSWORD, "refreshTokenDelivery": "body"}
    ).json_body
    assert call(api, "POST", "/items", old["token"], {"name": "secret"}).status_code == 201
    deleted = call(api, "DELETE", "/auth/user", old["token"], {"password": PASSWORD})
    assert deleted.status_code == 202
    finish_deletion(client, table, "alice")
    api.signup("Alice", "another passphrase entirely")
    new = api.login("alice", "another passphrase entirely")
    new_sub = jwt.decode(new, options={"verify_signature": False})["sub"]
    assert new_sub != jwt.decode(old["token"], options={"verify_signature": False})["sub"]
    # The old account's tokens are refused, and nothing of it shows in the new one.
    assert call(api, "GET", "/auth/user", old["token"]).status_code in {401, 403}
    assert api.post("/auth/refresh", {"refreshToken": old["refreshToken"]}).status_code == 401
    assert call(api, "GET", "/items", new).json_body["items"] == []
    kinds = [event["type"] for event in call(api, "GET", "/auth/events", new).json_body["events"]]
    assert sorted(kinds) == ["login", "signup"]
    assert call(api, "GET", "/auth/user", new).json_body["username"] == "Alice"


def test_names_are_one_in_any_case(api: Api) -> None:
    api.signup("Bob")
    taken = api.post("/auth/signup", {"username": "bob", "password": "a different passphrase"})
    assert (taken.status_code, taken.json_body) == (409, {"message": "Username is already taken"})
    token = api.login("BOB")
    assert call(api, "GET", "/auth/user", token).json_body["username"] == "Bob"


def test_legacy_rows_with_and_without_ids(api: Api, table: Any) -> None:
    upper, lower = node_scrypt_hashes(["upper password 1", "lower password 1"])
    for name, password_hash in (("Carol", upper), ("carol", lower)):
        table.put_item(
            Item={
                **user_key(name),
                "username": name,
                "passwordHash": password_hash,
                "createdAt": "2024-05-01T10:00:00.000Z",
            }
        )
    # Both log in under their exact names, each getting an id of its own on first use.
    first = api.login("Carol", "upper password 1")
    second = api.login("carol", "lower password 1")
    ids = {
        jwt.decode(token, options={"verify_signature": False})["sub"] for token in (first, second)
    }
    assert len(ids) == 2
    assert {
        table.get_item(Key=user_key(name))["Item"]["userId"] for name in ("Carol", "carol")
    } == ids
    # The first used holds the claim; other cases of the name reach it, and no one can sign up.
    assert table.get_item(Key=name_claim_key("carol"))["Item"]["username"] == "Carol"
    assert api.post("/auth/signup", {"username": "CAROL", "password": PASSWORD}).status_code == 409
    # With ids, the rows keep working: a second login keeps the same id.
    again = api.login("Carol", "upper password 1")
    assert jwt.decode(again, options={"verify_signature": False})["sub"] in ids
