"""What the bearer authorizer answers, in the three ways API Gateway understands."""

from __future__ import annotations

from typing import Any

from chalice.app import AuthRequest

from chalicelib.web.gateway import DENIAL_REASON


class Unauthorized(Exception):
    """No valid token: API Gateway answers 401 (gateway response ``UNAUTHORIZED``).

    API Gateway recognises this exact message from a failed authorizer; any other failure is
    ``AUTHORIZER_FAILURE`` (a 503 here), which, unlike a returned policy, is not cached.
    """

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def bearer_token(auth_request: AuthRequest) -> str | None:
    scheme, _, token = (auth_request.token or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def deny(auth_request: AuthRequest, reason: str) -> dict[str, Any]:
    """An explicit Deny with its reason, which the 403 gateway response shows as ``message``.

    Chalice's ``AuthResponse(routes=[])`` would be an Allow on no resources instead.
    """
    return {
        "principalId": "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Deny",
                    "Resource": auth_request.method_arn,
                }
            ],
        },
        "context": {DENIAL_REASON: reason},
    }
