"""Items through chalice's test client: ownership, paging, ETags, the admin index."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import Api, FakeClock, every_page, promote

PASSWORD = "correct horse battery"


class Caller:
    def __init__(self, api: Api, username: str, clock: FakeClock) -> None:
        api.signup(username, PASSWORD)
        self.api = api
        self.clock = clock
        self.headers = {"Authorization": f"Bearer {api.login(username, PASSWORD)}"}

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        all_headers = {**self.headers, **headers}
        if body is None:
            return self.api.client.http.request(method, path, headers=all_headers)
        all_headers["Content-Type"] = "application/json"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.api.client.http.request(method, path, headers=all_headers, body=raw)

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        self.clock.advance(milliseconds=1)  # ids order by creation time, to the millisecond
        response = self.call("POST", "/items", {"name": name, **fields})
        assert response.status_code == 201, response.body
        return dict(response.json_body)


@pytest.fixture
def alice(api: Api, clock: FakeClock) -> Caller:
    return Caller(api, "alice", clock)


@pytest.fixture
def bob(api: Api, clock: FakeClock) -> Caller:
    return Caller(api, "bob", clock)


def test_create_and_read_back(alice: Caller) -> None:
    response = alice.call("POST", "/items", {"name": "note", "data": {"x": 1.5, "y": [1, "a"]}})
    assert response.status_code == 201
    item = response.json_body
    assert set(item) == {"id", "name", "data", "status", "createdAt", "updatedAt", "version"}
    assert (item["name"], item["data"], item["status"], item["version"]) == (
        "note",
        {"x": 1.5, "y": [1, "a"]},
        "active",
        1,
    )
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"/items/{item['id']}"
    fetched = alice.call("GET", f"/items/{item['id']}")
    assert fetched.json_body == item
    assert fetched.headers["ETag"] == '"1"'


def test_ids_sort_by_creation_and_lists_are_newest_first(alice: Caller) -> None:
    ids = [alice.create(f"item {n}")["id"] for n in range(3)]
    assert ids == sorted(ids)
    listed = alice.call("GET", "/items").json_body["items"]
    assert [item["id"] for item in listed] == ids[::-1]


@pytest.mark.parametrize("status", [None, "pending"])
def test_pages_have_no_duplicates_or_gaps(alice: Caller, status: str | None) -> None:
    created = [
        alice.create(f"item {n}", status="pending" if n % 2 else "active")["id"] for n in range(9)
    ]
    expected = [item_id for n, item_id in enumerate(created) if status is None or n % 2][::-1]
    fetched: list[str | None] = []

    def fetch(cursor: str | None) -> Any:
        fetched.append(cursor)
        query = "?limit=2" + (f"&status={status}" if status else "")
        query += f"&cursor={cursor}" if cursor else ""
        page = alice.call("GET", f"/items{query}").json_body
        assert len(page["items"]) <= 2
        return page

    seen = [item["id"] for item in every_page(fetch, "items")]
    assert seen == expected
    assert len(fetched) == (len(expected) + 1) // 2


def test_isolation_on_every_route(alice: Caller, bob: Caller) -> None:
    item = alice.create("private", data={"secret": True})
    path = f"/items/{item['id']}"
    assert bob.call("GET", path).status_code == 404
    assert bob.call("PUT", path, {"name": "mine now"}, **{"If-Match": '"1"'}).status_code == 404
    assert bob.call("PATCH", path, {"name": "mine now"}, **{"If-Match": '"1"'}).status_code == 404
    assert bob.call("DELETE", path, **{"If-Match": '"1"'}).status_code == 404
    assert bob.call("DELETE", path).status_code == 404
    assert bob.call("GET", "/items").json_body["items"] == []
    # A cursor names only a sort key: bob's copy of alice's cursor reads bob's own partition.
    alice.create("another")
    cursor = alice.call("GET", "/items?limit=1").json_body["nextCursor"]
    assert bob.call("GET", f"/items?cursor={cursor}").json_body["items"] == []
    assert alice.call("GET", path).json_body == item


def test_put_with_the_current_etag_replaces_and_a_stale_one_is_412(alice: Caller) -> None:
    item = alice.create("draft", data={"a": 1})
    path = f"/items/{item['id']}"
    updated = alice.call(
        "PUT", path, {"name": "final", "status": "archived"}, **{"If-Match": '"1"'}
    )
    assert updated.status_code == 200
    assert updated.headers["ETag"] == '"2"'
    assert (updated.json_body["name"], updated.json_body["data"]) == ("final", {})
    assert updated.json_body["status"] == "archived"

    stale = alice.call("PUT", path, {"name": "lost update"}, **{"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["ETag"] == '"2"'
    assert stale.json_body["currentVersion"] == 2
    assert alice.call("GET", path).json_body["name"] == "final"


def test_patch_changes_only_what_it_is_given(alice: Caller) -> None:
    item = alice.create("draft", data={"a": 1}, status="pending")
    path = f"/items/{item['id']}"
    patched = alice.call("PATCH", path, {"status": "active"}, **{"If-Match": 'W/"1"'})
    assert patched.status_code == 200
    assert (patched.json_body["name"], patched.json_body["data"]) == ("draft", {"a": 1})
    assert (patched.json_body["status"], patched.json_body["version"]) == ("active", 2)
    assert alice.call("PATCH", path, {"name": "x"}, **{"If-Match": '"1"'}).status_code == 412


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_writes_without_if_match_are_428(alice: Caller, method: str) -> None:
    item = alice.create("draft")
    response = alice.call(method, f"/items/{item['id']}", {"name": "x"})
    assert response.status_code == 428
    assert "If-Match" in response.json_body["message"]


def test_delete_is_conditional_and_never_resurrected(alice: Caller) -> None:
    item = alice.create("doomed")
    path = f"/items/{item['id']}"
    alice.call("PATCH", path, {"name": "renamed"}, **{"If-Match": '"1"'})
    assert alice.call("DELETE", path, **{"If-Match": '"1"'}).status_code == 412
    assert alice.call("DELETE", path, **{"If-Match": '"2"'}).status_code == 200
    assert alice.call("DELETE", path).status_code == 404
    late = alice.call("PUT", path, {"name": "back from the dead"}, **{"If-Match": '"2"'})
    assert late.status_code == 404
    assert alice.call("GET", path).status_code == 404


def test_admins_list_items_of_everyone_by_status(
    api: Api, alice: Caller, bob: Caller, table: Any
) -> None:
    alice.create("a1", status="pending")
    bob.create("b1", status="pending")
    bob.create("b2", status="active")
    promote(table, "bob")
    assert alice.call("GET", "/admin/items?status=pending").status_code == 403
    first = bob.call("GET", "/admin/items?status=pending&limit=1").json_body
    second = bob.call("GET", f"/admin/items?status=pending&cursor={first['nextCursor']}").json_body
    owners = [item["owner"] for item in first["items"] + second["items"]]
    assert owners == ["bob", "alice"]
    assert second["nextCursor"] is None
    assert bob.call("GET", "/admin/items").status_code == 400


def test_the_admin_listing_merges_the_configured_shards_in_pages(
    api: Api, clock: FakeClock, table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the first request: the container reads its settings once.
    monkeypatch.setenv("STATUS_INDEX_SHARDS", "3")
    bob, carol = Caller(api, "bob", clock), Caller(api, "carol", clock)
    made = [(bob if n % 2 else carol).create(f"n{n}", status="pending")["id"] for n in range(9)]
    promote(table, "bob")
    shards = {
        row["gsi1pk"] for row in table.scan()["Items"] if str(row.get("gsi1pk", "")).startswith("I")
    }
    assert shards <= {f"ITEMSTATUS#pending#{n}" for n in range(3)}
    assert len(shards) > 1
    listed = every_page(
        lambda cursor: (
            bob.call(
                "GET",
                "/admin/items?status=pending&limit=2" + (f"&cursor={cursor}" if cursor else ""),
            ).json_body
        ),
        "items",
    )
    assert [item["id"] for item in listed] == made[::-1]
    refused = bob.call("GET", "/admin/items?status=pending&cursor=" + _cursor({"0": "x"}))
    assert refused.status_code == 400


def _cursor(position: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


BAD_ITEM_BODIES = [
    (b"{nope", "not valid JSON"),
    (b"[]", "JSON object"),
    (b"{}", "name"),
    (b'{"name": ""}', "name"),
    (b'{"name": "x", "data": [1]}', "data"),
    (b'{"name": "x", "data": "text"}', "data"),
    (b'{"name": "x", "status": "deleted"}', "status"),
    (b'{"name": "x", "owner": "bob"}', "owner"),
    (b'{"name": "x", "data": {"n": NaN}}', "finite"),
    (b'{"name": "x", "data": {"n": 1e400}}', "finite"),
    (b'{"name": "x", "data": {"n": 123456789012345678901234567890123456789}}', "38"),
    (b'{"name": "x", "data": {"n": 1e200}}', "38"),
    (b'{"name": "x", "data": ' + b'{"a": ' * 17 + b"1" + b"}" * 17 + b"}", "nest"),
    (b'{"name": "x", "data": {"big": "' + b"x" * 33000 + b'"}}', "32768 bytes"),
    (b'{"name": "x", "data": {"big": "' + b"x" * 70000 + b'"}}', "larger than 65536"),
    (b'{"name": "x", "data": {"s": "\\ud800"}}', "invalid Unicode"),
    (b'{"name": "\\udfff"}', "invalid Unicode"),
    (b'{"name": "x", "data": {"n": 1e126}}', "1e126"),
    (b'{"name": "x", "data": {"n": 1e-140}}', "1e-130"),
]


@pytest.mark.parametrize(("body", "words"), BAD_ITEM_BODIES)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_bad_item_bodies_are_4xx(alice: Caller, body: bytes, words: str, method: str) -> None:
    if method == "POST":
        response = alice.call("POST", "/items", body)
    else:
        item = alice.create("target")
        response = alice.call(method, f"/items/{item['id']}", body, **{"If-Match": '"1"'})
    if method == "PATCH" and words == "name" and body == b"{}":
        assert response.status_code == 200  # an empty patch changes nothing
        return
    expected = 413 if "larger" in words else 400
    assert response.status_code == expected
    assert words.lower() in response.json_body["message"].lower()


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=101",
        "?limit=ten",
        "?status=gone",
        "?cursor=%%%",
        f"?cursor={_cursor({'sk': 'PROFILE'})}",
        f"?cursor={_cursor({'pk': 'USER#bob', 'sk': 'ITEM#1'})}",
        f"?cursor={_cursor({'sk': 'ITEM#' + 'a' * 1500})}",
        f"?cursor={_cursor({'sk': 'ITEM#' + '0' * 27 + 'g'})}",
    ],
)
@pytest.mark.parametrize("path", ["/items", "/uploads", "/auth/events"])
def test_bad_list_parameters_are_400(alice: Caller, query: str, path: str) -> None:
    if "status=" in query and path != "/items":
        return
    response = alice.call("GET", f"{path}{query}")
    assert response.status_code == 400
    assert response.json_body["message"]


@pytest.mark.parametrize(
    "position",
    [
        {"pk": "USER#bob", "sk": "ITEM#" + "a" * 1500, "gsi": "0" * 28},
        {"pk": "USER#" + "b" * 2000, "sk": "ITEM#" + "0" * 28, "gsi": "0" * 28},
        {"pk": "USER#bob", "sk": "ITEM#" + "0" * 28},
        {"sk": "ITEM#" + "0" * 28},
    ],
)
def test_tampered_admin_cursors_are_400(
    alice: Caller, table: Any, position: dict[str, str]
) -> None:
    promote(table, "alice")
    headers = {"Authorization": f"Bearer {alice.api.login('alice', PASSWORD)}"}
    path = f"/admin/items?status=active&cursor={_cursor(position)}"
    response = alice.api.client.http.get(path, headers=headers)
    assert response.status_code == 400


@pytest.mark.parametrize("if_match", ["1", '"x"', "*", '"1", "2"'])
def test_unusable_if_match_is_412(alice: Caller, if_match: str) -> None:
    item = alice.create("target")
    response = alice.call("PUT", f"/items/{item['id']}", {"name": "y"}, **{"If-Match": if_match})
    assert response.status_code == 412
