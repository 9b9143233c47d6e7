"""API Gateway's own answers (gateway responses), one definition for the deployed API and the
local emulation of it (``tools/localgateway.py``). Dependency-free: the CDK app imports it.

Every error a client can see, the gateway's included, is JSON with a ``message``. The words of
the 401 are the original system's: its browser client returns to its login page on a 401 whose
message says "Invalid" or "expired".
"""

from __future__ import annotations

from dataclasses import dataclass

INVALID_TOKEN = "Invalid or expired token"  # noqa: S105 (words)
# The reason of the authorizer's Deny for a valid token that no longer counts.
TOKEN_REVOKED = "Access token revoked; please log in again"  # noqa: S105 (words)
UNAVAILABLE = "Service temporarily unavailable, please retry"
# The authorizer's Deny carries its reason in the context under this key.
DENIAL_REASON = "message"


@dataclass(frozen=True)
class GatewayResponse:
    kind: str
    status: int | None  # None: API Gateway's own status for that kind
    template: str


GATEWAY_RESPONSES = (
    # No token, a malformed one, or the authorizer failing with "Unauthorized".
    GatewayResponse("UNAUTHORIZED", 401, f'{{"message": "{INVALID_TOKEN}"}}'),
    # The authorizer's Deny: a valid token that is refused (revoked session, disabled account).
    GatewayResponse("ACCESS_DENIED", 403, f'{{"message": "$context.authorizer.{DENIAL_REASON}"}}'),
    # The authorizer could not decide (an AWS error): nothing is cached, the next call retries.
    GatewayResponse("AUTHORIZER_FAILURE", 503, f'{{"message": "{UNAVAILABLE}"}}'),
    GatewayResponse("AUTHORIZER_CONFIGURATION_ERROR", 503, f'{{"message": "{UNAVAILABLE}"}}'),
    GatewayResponse("DEFAULT_4XX", None, '{"message": $context.error.messageString}'),
    GatewayResponse("DEFAULT_5XX", None, '{"message": $context.error.messageString}'),
)
