"""Sessions and account security through chalice's test client: cookies, CSRF, revocation
reaching access tokens, limits, events and signing-key rotation."""

from __future__ import annotations

import json
import uuid
from http.cookies import SimpleCookie
from typing import Any

import boto3
import jwt
import pytest
from chalice.test import Client

import app as app_module
from chalicelib.keys import user_key
from tests.conftest import ROOT, Api, FakeClock, every_page, promote
from tools.localaws import CHALICE_CONFIG, Resources, ensure_secret, ensure_table

PASSWORD = "correct horse battery"
SITE = {"Origin": "http://127.0.0.1:5173", "X-Requested-With": "gatehouse"}


def set_cookies(response: Any) -> list[str]:
    """Every ``Set-Cookie`` of a response (the test client gives one as a string, more as a
    list)."""
    value = response.headers.get("Set-Cookie", [])
    return [value] if isinstance(value, str) else list(value)


def cookie_of(response: Any) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for each in set_cookies(response):
        cookie.load(each)
    return cookie


def refresh_with_cookie(api: Api, value: str, headers: dict[str, str] = SITE) -> Any:
    return api.client.http.post(
        "/auth/refresh", headers={"Cookie": f"gatehouse_refresh={value}", **headers}
    )


def login(api: Api, username: str = "alice", **extra: str) -> Any:
    response = api.post("/auth/login", {"username": username, "password": PASSWORD, **extra})
    assert response.status_code == 200, response.body
    return response


EDGE_SECRET = "e" * 40


@pytest.fixture
def edge_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """As deployed without a domain: CloudFront names the site's origin in this header."""
    monkeypatch.setenv("SITE_ORIGIN_HEADER", "X-Gatehouse-Site-Origin")


@pytest.fixture
def edge_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """As deployed: CloudFront proves a request passed through it with this shared value."""
    monkeypatch.setenv("EDGE_SECRET", EDGE_SECRET)


@pytest.fixture
def alice(api: Api) -> Any:
    api.signup("alice", PASSWORD)
    return login(api)


class TestCookies:
    def test_login_sets_a_strict_httponly_cookie_scoped_to_the_auth_routes(
        self, alice: Any
    ) -> None:
        morsel = cookie_of(alice)["gatehouse_refresh"]
        assert len(morsel.value) > 43
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/api/auth"
        assert int(morsel["max-age"]) == 30 * 86400
        # The dev stage runs over plain http, so only there is Secure left off.
        assert not morsel["secure"]
        assert "refreshToken" not in alice.json_body

    def test_outside_dev_the_cookie_is_secure_and_named_so(
        self, aws: boto3.Session, dependencies: app_module.Dependencies, edge_header: None
    ) -> None:
        """``__Secure-``: browsers keep it only from HTTPS, so no http page can plant one."""
        # The prod stage names no uploads bucket (the deployer's own): its table and key only.
        stage = json.loads(CHALICE_CONFIG.read_text())["stages"]["prod"]["environment_variables"]
        ensure_table(aws, stage["TABLE_NAME"])
        ensure_secret(aws, stage["JWT_SECRET_ID"])
        site = "https://site.example"
        headers = {"Origin": site, "X-Gatehouse-Site-Origin": site, "X-Requested-With": "x"}
        with Client(app_module.app, stage_name="prod", project_dir=str(ROOT)) as client:
            api = Api(client)
            api.signup("alice", PASSWORD)
            response = login(api)
            names = [each.split("=")[0] for each in set_cookies(response)]
            assert names == ["__Secure-gatehouse_refresh", "__Secure-gatehouse_device"]
            morsel = cookie_of(response)["__Secure-gatehouse_refresh"]
            assert morsel["secure"] is True
            # Only the name this stage sets is read.
            plain = client.http.post(
                "/auth/refresh", headers={"Cookie": f"gatehouse_refresh={morsel.value}", **headers}
            )
            assert plain.status_code == 401
            cookie = f"__Secure-gatehouse_refresh={morsel.value}"
            refreshed = client.http.post("/auth/refresh", headers={"Cookie": cookie, **headers})
            assert refreshed.status_code == 200
            assert cookie_of(refreshed)["__Secure-gatehouse_refresh"]["secure"] is True
            token = refreshed.json_body["token"]
            logout = client.http.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
            cleared = cookie_of(logout)["__Secure-gatehouse_refresh"]
            assert (cleared.value, cleared["max-age"]) == ("", "0")

    def test_the_plain_http_dev_stage_sets_and_reads_the_unprefixed_name_only(
        self, api: Api, alice: Any
    ) -> None:
        # Secure is off on http://127.0.0.1, and a __Secure- cookie must be Secure.
        names = [each.split("=")[0] for each in set_cookies(alice)]
        assert names == ["gatehouse_refresh", "gatehouse_device"]
        value = cookie_of(alice)["gatehouse_refresh"].value
        cookie = f"__Secure-gatehouse_refresh={value}"
        response = api.client.http.post("/auth/refresh", headers={"Cookie": cookie, **SITE})
        assert response.status_code == 401
        assert refresh_with_cookie(api, value).status_code == 200

    def test_refresh_by_cookie_rotates_it(self, api: Api, alice: Any) -> None:
        first = cookie_of(alice)["gatehouse_refresh"].value
        response = refresh_with_cookie(api, first)
        assert response.status_code == 200
        assert response.json_body["username"] == "alice"
        second = cookie_of(response)["gatehouse_refresh"].value
        assert second != first
        assert api.get("/auth/user", response.json_body["token"]).status_code == 200
        assert refresh_with_cookie(api, second).status_code == 200

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"X-Requested-With": "gatehouse"},
            {"Origin": "http://127.0.0.1:5173"},
            {"Origin": "https://evil.example", "X-Requested-With": "gatehouse"},
            {"Origin": "null", "X-Requested-With": "gatehouse"},
        ],
    )
    def test_a_cross_site_refresh_is_refused(
        self, api: Api, alice: Any, headers: dict[str, str]
    ) -> None:
        value = cookie_of(alice)["gatehouse_refresh"].value
        response = refresh_with_cookie(api, value, headers)
        assert response.status_code == 403
        assert "Cross-site" in response.json_body["message"]
        # The refused request did not consume the token.
        assert refresh_with_cookie(api, value).status_code == 200

    @pytest.mark.parametrize(
        ("edge_says", "status"),
        [("https://d1.cloudfront.net", 200), ("https://d2.cloudfront.net", 403), ("", 403)],
    )
    def test_the_edge_may_name_the_sites_origin(
        self, edge_header: None, api: Api, alice: Any, edge_says: str, status: int
    ) -> None:
        headers = {"Origin": "https://d1.cloudfront.net", "X-Requested-With": "gatehouse"}
        if edge_says:
            headers["X-Gatehouse-Site-Origin"] = edge_says
        value = cookie_of(alice)["gatehouse_refresh"].value
        assert refresh_with_cookie(api, value, headers).status_code == status

    def test_without_the_edge_secret_the_site_origin_header_is_ignored(
        self, edge_header: None, edge_secret: None, api: Api, alice: Any
    ) -> None:
        origin = "https://d1.cloudfront.net"
        headers = {"Origin": origin, "X-Requested-With": "gatehouse"}
        headers["X-Gatehouse-Site-Origin"] = origin
        value = cookie_of(alice)["gatehouse_refresh"].value
        assert refresh_with_cookie(api, value, headers).status_code == 403
        through_edge = {**headers, "X-Gatehouse-Edge": EDGE_SECRET}
        assert refresh_with_cookie(api, value, through_edge).status_code == 200

    def test_a_failed_refresh_clears_the_cookie(self, api: Api, alice: Any) -> None:
        response = refresh_with_cookie(api, "YWxpY2U." + "x" * 43)
        assert response.status_code == 401
        assert cookie_of(response)["gatehouse_refresh"]["max-age"] == "0"


class TestBodyDelivery:
    def test_non_browser_clients_get_and_send_the_token_in_json(self, api: Api) -> None:
        api.signup("alice", PASSWORD)
        response = login(api, refreshTokenDelivery="body")
        assert "Set-Cookie" not in response.headers
        token = response.json_body["refreshToken"]
        assert response.json_body["refreshExpiresIn"] == 30 * 86400

        refreshed = api.post("/auth/refresh", {"refreshToken": token})
        assert refreshed.status_code == 200
        assert refreshed.json_body["refreshToken"] != token
        assert "Set-Cookie" not in refreshed.headers

    def test_a_replay_within_the_grace_window_gets_no_new_refresh_token(
        self, api: Api, clock: FakeClock
    ) -> None:
        api.signup("alice", PASSWORD)
        token = login(api, refreshTokenDelivery="body").json_body["refreshToken"]
        assert api.post("/auth/refresh", {"refreshToken": token}).status_code == 200
        clock.advance(seconds=5)
        late = api.post("/auth/refresh", {"refreshToken": token})
        assert late.status_code == 200
        assert "refreshToken" not in late.json_body
        assert api.get("/auth/user", late.json_body["token"]).status_code == 200

    def test_reuse_after_the_grace_window_revokes_the_family(
        self, api: Api, clock: FakeClock
    ) -> None:
        api.signup("alice", PASSWORD)
        stolen = login(api, refreshTokenDelivery="body").json_body["refreshToken"]
        current = api.post("/auth/refresh", {"refreshToken": stolen}).json_body["refreshToken"]
        clock.advance(seconds=11)
        replay = api.post("/auth/refresh", {"refreshToken": stolen})
        assert replay.status_code == 401
        assert api.post("/auth/refresh", {"refreshToken": current}).status_code == 401

    @pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"}, SITE])
    def test_a_refresh_with_neither_cookie_nor_body_is_a_401(
        self, api: Api, headers: dict[str, str]
    ) -> None:
        """What a browser without a session sends; no Content-Type, so not a 415."""
        response = api.client.http.post("/auth/refresh", headers=headers, body=b"")
        assert response.status_code == 401
        assert response.json_body["message"] == "Session expired or revoked; please log in again"

    @pytest.mark.parametrize(
        "body", [b"{}", b'{"refreshToken": 5}', b'{"refreshToken": ""}', b"[]"]
    )
    def test_a_refresh_without_a_token_is_a_400(self, api: Api, body: bytes) -> None:
        response = api.client.http.post(
            "/auth/refresh", headers={"Content-Type": "application/json"}, body=body
        )
        assert response.status_code == 400
        assert response.json_body["message"]


class TestRevocation:
    def test_logout_everywhere_rejects_access_tokens_at_once(self, api: Api, alice: Any) -> None:
        other = login(api)
        token, other_token = alice.json_body["token"], other.json_body["token"]
        assert (
            api.post("/auth/logout-all", {}, {"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
        assert api.get("/auth/user", token).status_code == 403
        assert api.get("/auth/user", other_token).status_code == 403
        for response in (alice, other):
            value = cookie_of(response)["gatehouse_refresh"].value
            assert refresh_with_cookie(api, value).status_code == 401
        assert api.get("/auth/user", login(api).json_body["token"]).status_code == 200

    def test_password_change_rejects_old_access_tokens_at_once(self, api: Api, alice: Any) -> None:
        token = alice.json_body["token"]
        response = api.post(
            "/auth/password",
            {"currentPassword": PASSWORD, "newPassword": "an entirely new passphrase"},
            {"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert api.get("/auth/user", token).status_code == 403
        assert api.get("/auth/user", response.json_body["token"]).status_code == 200
        assert cookie_of(response)["gatehouse_refresh"].value
        bad = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
        assert bad.status_code == 401

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"currentPassword": "wrong password", "newPassword": "a fine new passphrase"}, 401),
            ({"currentPassword": PASSWORD, "newPassword": "password1"}, 400),
            ({"currentPassword": PASSWORD, "newPassword": "short"}, 400),
            ({"currentPassword": PASSWORD}, 400),
        ],
    )
    def test_password_change_refusals(
        self, api: Api, alice: Any, body: dict[str, str], status: int
    ) -> None:
        token = alice.json_body["token"]
        response = api.post("/auth/password", body, {"Authorization": f"Bearer {token}"})
        assert response.status_code == status
        assert response.json_body["message"]
        assert api.get("/auth/user", token).status_code == 200

    def test_a_disabled_user_is_locked_out_at_once(self, api: Api, alice: Any, table: Any) -> None:
        table.update_item(
            Key=user_key("alice"),
            UpdateExpression="SET disabled = :yes",
            ExpressionAttributeValues={":yes": True},
        )
        assert api.get("/auth/user", alice.json_body["token"]).status_code == 403
        refused = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
        assert refused.status_code == 403
        assert refused.json_body == {"message": "Account is disabled"}

    def test_a_deleted_user_is_locked_out_at_once(self, api: Api, alice: Any, table: Any) -> None:
        table.delete_item(Key=user_key("alice"))
        assert api.get("/auth/user", alice.json_body["token"]).status_code == 403


class TestSessionRoutes:
    def test_list_logout_and_end_one(self, api: Api) -> None:
        api.signup("alice", PASSWORD)
        laptop = api.post(
            "/auth/login", {"username": "alice", "password": PASSWORD}, {"User-Agent": "laptop"}
        )
        phone = api.post(
            "/auth/login", {"username": "alice", "password": PASSWORD}, {"User-Agent": "phone"}
        )
        auth = {"Authorization": f"Bearer {laptop.json_body['token']}"}
        listed = api.client.http.get("/auth/sessions", headers=auth).json_body["sessions"]
        assert {(s["userAgent"], s["current"]) for s in listed} == {
            ("laptop", True),
            ("phone", False),
        }
        phone_id = phone.json_body["sessionId"]
        assert api.client.http.delete(f"/auth/sessions/{phone_id}", headers=auth).status_code == 200
        assert api.client.http.delete(f"/auth/sessions/{phone_id}", headers=auth).status_code == 404
        phone_cookie = cookie_of(phone)["gatehouse_refresh"].value
        assert refresh_with_cookie(api, phone_cookie).status_code == 401

        logout = api.client.http.post("/auth/logout", headers=auth)
        assert logout.status_code == 200
        assert cookie_of(logout)["gatehouse_refresh"]["max-age"] == "0"
        laptop_cookie = cookie_of(laptop)["gatehouse_refresh"].value
        assert refresh_with_cookie(api, laptop_cookie).status_code == 401

    def test_a_user_cannot_end_another_users_session(self, api: Api, alice: Any) -> None:
        api.signup("bob", PASSWORD)
        bob = login(api, "bob")
        auth = {"Authorization": f"Bearer {bob.json_body['token']}"}
        alice_session = alice.json_body["sessionId"]
        response = api.client.http.delete(f"/auth/sessions/{alice_session}", headers=auth)
        assert response.status_code == 404
        assert (
            refresh_with_cookie(api, cookie_of(alice)["gatehouse_refresh"].value).status_code == 200
        )


class TestLimits:
    def test_lockout_answers_429_with_retry_after(
        self, api: Api, alice: Any, clock: FakeClock
    ) -> None:
        for _ in range(6):
            wrong = api.post("/auth/login", {"username": "alice", "password": "not it at all"})
            assert wrong.status_code == 401
        locked = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
        assert locked.status_code == 429
        assert locked.headers["Retry-After"] == "1"
        assert locked.json_body["retryAfter"] == 1
        clock.advance(seconds=1)
        assert (
            api.post("/auth/login", {"username": "alice", "password": PASSWORD}).status_code == 200
        )

    def test_per_ip_limit(
        self, api: Api, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IP_RATE_LIMIT", "3")
        monkeypatch.setenv("IP_RATE_WINDOW_SECONDS", "60")
        clock.now = clock.now.replace(second=0, microsecond=0)
        for name in ("user-one", "user-two", "user-three"):
            api.signup(name, PASSWORD)
        refused = api.post("/auth/signup", {"username": "user-four", "password": PASSWORD})
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "60"
        clock.advance(seconds=60)
        api.signup("user-four", PASSWORD)

    def test_behind_a_trusted_proxy_the_forwarded_address_counts(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IP_RATE_LIMIT", "1")
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")

        def signup(name: str, forwarded: str) -> int:
            body = {"username": name, "password": PASSWORD}
            return int(api.post("/auth/signup", body, {"X-Forwarded-For": forwarded}).status_code)

        assert signup("user-one", "198.51.100.1") == 201
        # A client-written address further left changes nothing: the proxy's entry counts.
        assert signup("user-two", "1.2.3.4, 198.51.100.1") == 429
        assert signup("user-three", "198.51.100.2") == 201

    def test_only_requests_through_the_edge_may_name_their_address(
        self, edge_secret: None, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IP_RATE_LIMIT", "1")
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", "2")

        def signup(name: str, forwarded: str, edge: str | None) -> int:
            headers = {"X-Forwarded-For": forwarded}
            if edge is not None:
                headers["X-Gatehouse-Edge"] = edge
            body = {"username": name, "password": PASSWORD}
            return int(api.post("/auth/signup", body, headers).status_code)

        assert signup("user-one", "198.51.100.1, 203.0.113.9", EDGE_SECRET) == 201
        assert signup("user-two", "198.51.100.2, 203.0.113.9", EDGE_SECRET) == 201
        # Straight to API Gateway, forged addresses are ignored: all share the caller's own.
        assert signup("user-three", "198.51.100.3, 203.0.113.9", None) == 201
        assert signup("user-four", "198.51.100.4, 203.0.113.9", None) == 429
        assert signup("user-five", "198.51.100.5, 203.0.113.9", "x" * 32) == 429


class TestEvents:
    def test_users_read_their_own_log_page_by_page(self, api: Api, alice: Any) -> None:
        api.post("/auth/login", {"username": "alice", "password": "not it at all"})
        token = login(api).json_body["token"]

        def fetch(cursor: str | None) -> Any:
            query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = api.get(f"/auth/events{query}", token).json_body
            assert len(page["events"]) <= 2
            return page

        seen = [event["type"] for event in every_page(fetch, "events")]
        assert sorted(seen) == ["login", "login", "login_failure", "signup"]

    @pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?limit=x", "?cursor=garbage"])
    def test_bad_paging_is_a_400(self, api: Api, alice: Any, query: str) -> None:
        response = api.get(f"/auth/events{query}", alice.json_body["token"])
        assert response.status_code == 400

    def test_only_admins_read_other_logs(self, api: Api, alice: Any, table: Any) -> None:
        api.signup("root", PASSWORD)
        promote(table, "root")
        admin_token = login(api, "root").json_body["token"]
        events = api.get("/users/alice/events", admin_token).json_body["events"]
        assert {event["type"] for event in events} == {"signup", "login"}
        assert api.get("/users/root/events", alice.json_body["token"]).status_code == 403


def test_signing_key_rotation_end_to_end(
    api: Api, alice: Any, clock: FakeClock, client: Client, resources: Resources
) -> None:
    def rotate() -> None:
        token = str(uuid.uuid4())
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            event = {"Step": step, "SecretId": resources.jwt_secret_id, "ClientRequestToken": token}
            result = client.lambda_.invoke("rotate_signing_key", event)
            assert result.payload is None, result.payload
        clock.advance(seconds=301)  # past every container's key cache

    before = alice.json_body["token"]
    rotate()
    after = login(api).json_body["token"]
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    assert api.get("/auth/user", before).status_code == 200
    assert api.get("/auth/user", after).status_code == 200
    rotate()
    assert api.get("/auth/user", before).status_code == 401
    assert api.get("/auth/user", after).status_code == 200


def test_rotation_refuses_another_secret(client: Client, aws: boto3.Session) -> None:
    aws.client("secretsmanager").create_secret(Name="someone-elses", SecretString="x" * 40)
    event = {"Step": "createSecret", "SecretId": "someone-elses", "ClientRequestToken": "t"}
    with pytest.raises(Exception, match="only the configured signing key"):
        client.lambda_.invoke("rotate_signing_key", event)
    versions = aws.client("secretsmanager").list_secret_version_ids(SecretId="someone-elses")
    assert len(versions["Versions"]) == 1


class TestReviewFindings:
    def test_ending_a_session_stops_its_access_token_at_once(self, api: Api) -> None:
        api.signup("alice", PASSWORD)
        laptop, phone = login(api), login(api)
        laptop_auth = {"Authorization": f"Bearer {laptop.json_body['token']}"}
        phone_token = phone.json_body["token"]
        ended = api.client.http.delete(
            f"/auth/sessions/{phone.json_body['sessionId']}", headers=laptop_auth
        )
        assert ended.status_code == 200
        assert api.get("/auth/user", phone_token).status_code == 403
        assert api.client.http.post("/auth/logout", headers=laptop_auth).status_code == 200
        assert api.get("/auth/user", laptop.json_body["token"]).status_code == 403

    def test_a_revoked_family_takes_its_access_tokens_along(
        self, api: Api, clock: FakeClock
    ) -> None:
        api.signup("alice", PASSWORD)
        stolen = login(api, refreshTokenDelivery="body").json_body["refreshToken"]
        thief = api.post("/auth/refresh", {"refreshToken": stolen}).json_body
        clock.advance(seconds=11)
        assert api.post("/auth/refresh", {"refreshToken": stolen}).status_code == 401
        assert api.get("/auth/user", thief["token"]).status_code == 403
        events = api.get("/auth/events", login(api).json_body["token"]).json_body["events"]
        assert "refresh_reuse" in {event["type"] for event in events}

    def test_other_cookies_do_not_break_refresh(self, api: Api, alice: Any) -> None:
        value = cookie_of(alice)["gatehouse_refresh"].value
        cookie = f'consent={{"a":1}}; bad cookie=1; gatehouse_refresh={value}; theme=dark'
        response = api.client.http.post("/auth/refresh", headers={"Cookie": cookie, **SITE})
        assert response.status_code == 200

    def test_password_change_can_deliver_the_new_token_in_the_body(
        self, api: Api, alice: Any
    ) -> None:
        response = api.post(
            "/auth/password",
            {
                "currentPassword": PASSWORD,
                "newPassword": "an entirely new passphrase",
                "refreshTokenDelivery": "body",
            },
            {"Authorization": f"Bearer {alice.json_body['token']}"},
        )
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        refreshed = api.post("/auth/refresh", {"refreshToken": response.json_body["refreshToken"]})
        assert refreshed.status_code == 200

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("DELETE", "/auth/sessions/" + "s" * 2000),
            ("GET", "/items/" + "f" * 2000),
            ("GET", "/users/" + "u" * 2000 + "/events"),
            ("GET", "/auth/events?cursor=" + "e" * 5000),
        ],
    )
    def test_oversized_ids_are_4xx_not_500(
        self, api: Api, alice: Any, table: Any, method: str, path: str
    ) -> None:
        promote(table, "alice")
        auth = {"Authorization": f"Bearer {login(api).json_body['token']}"}
        response = api.client.http.request(method, path, headers=auth)
        assert response.status_code in {400, 404}

    def test_ipv6_clients_are_counted_per_64(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IP_RATE_LIMIT", "1")
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")

        def signup(name: str, address: str) -> int:
            body = {"username": name, "password": PASSWORD}
            return int(api.post("/auth/signup", body, {"X-Forwarded-For": address}).status_code)

        assert signup("user-one", "2001:db8:1:2::1") == 201
        assert signup("user-two", "2001:db8:1:2:ffff::9") == 429
        assert signup("user-three", "2001:db8:1:3::1") == 201


class TestKnownDevices:
    """The account-wide budget over HTTP: a botnet (one address per guess) is answered 429 once
    the unknown devices' budget is spent, while the browser the owner logged in with is not."""

    @pytest.fixture
    def botnet(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Behind one proxy: the client's address is the last X-Forwarded-For entry.
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")
        monkeypatch.setenv("ACCOUNT_FREE_FAILURES", "3")

    @staticmethod
    def attempt(api: Api, password: str, address: str, cookie: str | None = None) -> Any:
        headers = {"X-Forwarded-For": address}
        if cookie is not None:
            headers["Cookie"] = cookie
        return api.post("/auth/login", {"username": "alice", "password": password}, headers)

    def test_a_botnet_is_slowed_and_the_owners_browser_is_not(self, api: Api, botnet: None) -> None:
        api.signup("alice", PASSWORD)
        owner = self.attempt(api, PASSWORD, "203.0.113.7")
        morsel = cookie_of(owner)["gatehouse_device"]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/api/auth"
        assert int(morsel["max-age"]) == 365 * 86400
        device = f"gatehouse_device={morsel.value}"
        statuses = [
            self.attempt(api, "guess", f"198.51.100.{index}").status_code for index in range(4)
        ]
        assert statuses == [401] * 4
        slowed = self.attempt(api, "guess", "198.51.100.99")
        assert slowed.status_code == 429
        assert slowed.headers["Retry-After"] == "1"
        assert slowed.json_body["retryAfter"] == 1
        # A new browser of the owner's waits too; the known one does not.
        assert self.attempt(api, PASSWORD, "192.0.2.1").status_code == 429
        assert self.attempt(api, PASSWORD, "203.0.113.7", device).status_code == 200
        # The cookie is the account's own: sent with another name, it is an unknown device.
        api.signup("bob", PASSWORD)
        for index in range(5):
            api.post(
                "/auth/login",
                {"username": "bob", "password": "guess"},
                {"X-Forwarded-For": f"198.51.100.{index}"},
            )
        other = api.post(
            "/auth/login",
            {"username": "bob", "password": PASSWORD},
            {"X-Forwarded-For": "203.0.113.7", "Cookie": device},
        )
        assert other.status_code == 429
