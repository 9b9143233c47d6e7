"""Where uploaded objects live in the uploads bucket; dependency-free so CDK can import it."""

from __future__ import annotations

from urllib.parse import quote

# Every object the app writes lies under it (the IAM grants rely on it). Not uploads/{name}/:
# the bucket's lifecycle rule empties uploads/temp/ daily, and "temp" is a valid username.
UPLOAD_PREFIX = "uploads/users/"


def upload_prefix(owner: str) -> str:
    # Percent-encoded: names the original system allowed may hold "/", and "alice/x" must not
    # live inside alice's prefix. New names (A-Z a-z 0-9 . _ -) are unchanged.
    return f"{UPLOAD_PREFIX}{quote(owner, safe='._-')}/"
