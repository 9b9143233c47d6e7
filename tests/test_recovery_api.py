"""Email, verification and password reset over HTTP: the routes, their answers and errors, and
that they are enumeration-safe (every answer checked against the OpenAPI document)."""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.mail import InMemoryMailer
from tests.conftest import Api
from tests.test_notices import deliver_notices

PASSWORD = "correct horse battery"


def token_in(mailbox: InMemoryMailer, path: str) -> str:
    match = re.search(rf"{path}\?token=([A-Za-z0-9_.%-]+)", mailbox.sent[-1].text)
    assert match is not None, mailbox.sent[-1].text
    return match.group(1)


def send(api: Api, method: str, path: str, body: object, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return api.client.http.request(method, path, headers=headers, body=json.dumps(body).encode())


def verified(api: Api, mailbox: InMemoryMailer, name: str, email: str) -> None:
    body = {"username": name, "password": PASSWORD, "email": email}
    assert api.post("/auth/signup", body).status_code == 201
    answer = api.post("/auth/email/verify", {"token": token_in(mailbox, "/verify-email")})
    assert answer.json_body == {"message": "Email verified", "email": email}


def test_the_profile_shows_the_address_and_whether_it_is_verified(
    api: Api, mailbox: InMemoryMailer
) -> None:
    api.signup("carol")
    assert api.get("/auth/user", api.login("carol")).json_body["emailVerified"] is False
    verified(api, mailbox, "alice", "alice@example.com")
    profile = api.get("/auth/user", api.login("alice")).json_body
    assert (profile["email"], profile["emailVerified"]) == ("alice@example.com", True)


def test_setting_an_address_needs_the_password_and_mails_a_link(
    api: Api, mailbox: InMemoryMailer
) -> None:
    api.signup("bob")
    token = api.login("bob")
    wrong = send(api, "PUT", "/auth/email", {"email": "b@example.com", "password": "nope"}, token)
    assert (wrong.status_code, mailbox.sent) == (401, [])
    answer = send(
        api, "PUT", "/auth/email", {"email": "b@example.com", "password": PASSWORD}, token
    )
    assert answer.status_code == 200
    assert answer.json_body == {
        "message": "Verification link sent",
        "email": "b@example.com",
        "emailVerified": False,
    }
    assert mailbox.sent[-1].to == "b@example.com"
    bad = send(api, "PUT", "/auth/email", {"email": "not an address", "password": PASSWORD}, token)
    assert bad.status_code == 400


def test_an_address_verified_by_another_account_is_409(api: Api, mailbox: InMemoryMailer) -> None:
    verified(api, mailbox, "alice", "alice@example.com")
    body = {"username": "mallory", "password": PASSWORD, "email": "ALICE@example.com"}
    assert api.post("/auth/signup", body).status_code == 201
    taken = api.post("/auth/email/verify", {"token": token_in(mailbox, "/verify-email")})
    assert taken.status_code == 409
    assert taken.json_body == {"message": "This email address belongs to another account"}


def test_forgot_answers_the_same_for_every_login(api: Api, mailbox: InMemoryMailer) -> None:
    verified(api, mailbox, "alice", "alice@example.com")
    api.signup("bob")
    answers = [
        api.post("/auth/password/forgot", {"login": login})
        for login in ("alice", "bob", "nobody", "alice@example.com", "x@example.com")
    ]
    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.body for answer in answers}) == 1
    assert [mail.to for mail in mailbox.sent[1:]] == ["alice@example.com"] * 2


def test_a_reset_ends_every_session_and_the_new_password_works(
    api: Api, mailbox: InMemoryMailer, table: Any
) -> None:
    verified(api, mailbox, "alice", "alice@example.com")
    login = api.post(
        "/auth/login", {"username": "alice", "password": PASSWORD, "refreshTokenDelivery": "body"}
    ).json_body
    api.post("/auth/password/forgot", {"login": "alice"})
    token = token_in(mailbox, "/reset")
    weak = api.post("/auth/password/reset", {"token": token, "password": "password1"})
    assert weak.status_code == 400
    done = api.post("/auth/password/reset", {"token": token, "password": "a brand new passphrase"})
    assert done.json_body == {"message": "Password changed; please log in"}
    assert api.get("/auth/user", login["token"]).status_code == 403
    refresh = api.post("/auth/refresh", {"refreshToken": login["refreshToken"]})
    assert refresh.status_code == 401
    assert api.login("alice", "a brand new passphrase")
    again = api.post("/auth/password/reset", {"token": token, "password": "another passphrase!"})
    assert again.status_code == 400
    assert again.json_body == {
        "message": "This link is invalid or has expired; please ask for a new one"
    }
    # The owner is told, by the mail worker.
    deliver_notices(api.client, table, "alice")
    notice = mailbox.sent[-1]
    assert (notice.to, notice.subject) == ("alice@example.com", "Your password was changed")
