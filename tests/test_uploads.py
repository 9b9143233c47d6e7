"""Uploads through chalice's test client and moto (the HTTP upload itself is in test_devstack)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from chalicelib.uploads import safe_filename
from tests.conftest import Api, every_page
from tools.localaws import Resources

PASSWORD = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def auth(api: Api, username: str) -> dict[str, str]:
    api.signup(username, PASSWORD)
    return {"Authorization": f"Bearer {api.login(username, PASSWORD)}"}


def start(api: Api, headers: dict[str, str], **overrides: Any) -> Any:
    body = {"filename": "cat.png", "contentType": "image/png", "size": len(PNG), "kind": "image"}
    return api.post("/uploads", {**body, **overrides}, headers)


def test_start_presigns_a_post_that_pins_key_type_and_size(api: Api) -> None:
    alice = auth(api, "alice")
    response = start(api, alice, filename="../../etc/cat.png")
    assert response.status_code == 201
    upload, post = response.json_body["upload"], response.json_body["post"]
    assert (upload["status"], upload["filename"], upload["size"]) == ("pending", "cat.png", 32)
    key = post["fields"]["key"]
    assert key == f"uploads/users/alice/images/{upload['id']}/cat.png"
    assert post["fields"]["Content-Type"] == "image/png"
    assert "policy" in post["fields"]


def test_complete_checks_the_object_then_lists_downloads_and_deletes(
    api: Api, aws: boto3.Session, resources: Resources
) -> None:
    alice = auth(api, "alice")
    created = start(api, alice).json_body
    upload_id, key = created["upload"]["id"], created["post"]["fields"]["key"]
    early = api.client.http.post(f"/uploads/{upload_id}/complete", headers=alice)
    assert early.status_code == 409
    s3 = aws.client("s3")
    s3.put_object(Bucket=resources.uploads_bucket, Key=key, Body=PNG[:-1], ContentType="image/png")
    short = api.client.http.post(f"/uploads/{upload_id}/complete", headers=alice)
    assert short.status_code == 409
    assert "differs" in short.json_body["message"]
    s3.put_object(Bucket=resources.uploads_bucket, Key=key, Body=PNG, ContentType="image/png")
    done = api.client.http.post(f"/uploads/{upload_id}/complete", headers=alice)
    assert done.status_code == 200
    assert done.json_body["status"] == "ready"
    listed = api.client.http.get("/uploads", headers=alice).json_body["uploads"]
    assert [entry["id"] for entry in listed] == [upload_id]
    fetched = api.client.http.get(f"/uploads/{upload_id}", headers=alice).json_body
    assert key.split("/")[-1] in fetched["downloadUrl"]
    assert api.client.http.delete(f"/uploads/{upload_id}", headers=alice).status_code == 200
    assert s3.list_objects_v2(Bucket=resources.uploads_bucket).get("KeyCount") == 0
    assert api.client.http.get(f"/uploads/{upload_id}", headers=alice).status_code == 404


def test_uploads_are_private_to_their_owner(api: Api) -> None:
    alice, bob = auth(api, "alice"), auth(api, "bob")
    upload_id = start(api, alice).json_body["upload"]["id"]
    assert api.client.http.get(f"/uploads/{upload_id}", headers=bob).status_code == 404
    assert api.client.http.post(f"/uploads/{upload_id}/complete", headers=bob).status_code == 404
    assert api.client.http.delete(f"/uploads/{upload_id}", headers=bob).status_code == 404
    assert api.client.http.get("/uploads", headers=bob).json_body["uploads"] == []


def test_listing_pages_without_gaps(api: Api) -> None:
    alice = auth(api, "alice")
    ids = [start(api, alice, filename=f"f{n}.png").json_body["upload"]["id"] for n in range(5)]

    def fetch(cursor: str | None) -> Any:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        return api.client.http.get(f"/uploads{query}", headers=alice).json_body

    seen = [entry["id"] for entry in every_page(fetch, "uploads")]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"contentType": "application/x-msdownload"}, "must be one of"),
        ({"contentType": "image/svg+xml"}, "must be one of"),
        ({"kind": "document", "contentType": "image/png"}, "must be one of"),
        ({"size": 10 * 1024 * 1024 + 1}, "between"),
        (
            {"kind": "document", "contentType": "application/pdf", "size": 25 * 1024 * 1024 + 1},
            "between",
        ),
        ({"size": 0}, "size"),
        ({"size": "12"}, "size"),
        ({"kind": "video"}, "kind"),
        ({"filename": ""}, "filename"),
        ({"filename": "x" * 256}, "filename"),
    ],
)
def test_bad_upload_requests_are_400(api: Api, overrides: dict[str, Any], words: str) -> None:
    response = start(api, auth(api, "alice"), **overrides)
    assert response.status_code == 400
    assert words in response.json_body["message"]


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("..", "file"),
        ("na\x00me\n.pdf", "name.pdf"),
        ("a...b..png", "a.b.png"),
        ("résumé.pdf", "r_sum_.pdf"),
        ("x" * 300 + ".png", "x" * 96 + ".png"),
    ],
)
def test_filenames_are_sanitised(name: str, safe: str) -> None:
    assert safe_filename(name) == safe
