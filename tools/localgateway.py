"""API Gateway's own answers under ``chalice local`` and ``chalice.test.Client``.

Both run requests through Chalice's ``LocalGateway``, which answers authorizer denials in its
own words (``{"Message": ...}``, no CORS headers) and lets an authorizer's exception escape.
Deployed, API Gateway answers with the gateway responses the API defines
(``chalicelib/web/gateway.py``). ``install()`` makes both local runners answer the same way:

- the authorizer fails with "Unauthorized" (or no token is sent): ``UNAUTHORIZED``, 401;
- the authorizer denies: ``ACCESS_DENIED``, 403, with the reason from its context;
- the authorizer fails otherwise: ``AUTHORIZER_FAILURE``, 503;
- any other gateway error (an unknown route): ``DEFAULT_4XX`` with the gateway's message.

Each carries ``Cache-Control: no-store`` and, when the app has CORS on, its allowed origin.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import chalice.local
import chalice.test
from chalice.app import Chalice, CORSConfig
from chalice.config import Config
from chalice.local import (
    ForbiddenError,
    InvalidAuthorizerError,
    LambdaContext,
    LocalGatewayAuthorizer,
    LocalGatewayException,
    NotAuthorizedError,
)

from chalicelib.web.gateway import DENIAL_REASON, GATEWAY_RESPONSES

logger = logging.getLogger(__name__)
_RESPONSES = {response.kind: response for response in GATEWAY_RESPONSES}
# The error type header API Gateway sends with each of its own answers.
_ERROR_TYPES = {
    "UNAUTHORIZED": "UnauthorizedException",
    "ACCESS_DENIED": "AccessDeniedException",
    "AUTHORIZER_FAILURE": "AuthorizerFailureException",
    "AUTHORIZER_CONFIGURATION_ERROR": "AuthorizerConfigurationException",
    "DEFAULT_4XX": "ForbiddenException",
}


class GatewayAnswer(Exception):
    """A gateway response of ``kind``, with what its template refers to."""

    def __init__(self, kind: str, *, reason: str = "", error: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.reason = reason
        self.error = error


class EmulatedAuthorizer(LocalGatewayAuthorizer):
    def authorize(self, raw_path: str, lambda_event: Any, lambda_context: LambdaContext) -> Any:
        try:
            return super().authorize(raw_path, lambda_event, lambda_context)
        except GatewayAnswer:
            raise
        except NotAuthorizedError:
            raise GatewayAnswer("UNAUTHORIZED") from None
        except InvalidAuthorizerError:
            raise GatewayAnswer("AUTHORIZER_CONFIGURATION_ERROR") from None
        except LocalGatewayException:
            raise
        except Exception as exc:  # noqa: BLE001 (API Gateway catches whatever the Lambda raises)
            # What the authorizer function raised: API Gateway knows only "Unauthorized".
            if str(exc) == "Unauthorized":
                raise GatewayAnswer("UNAUTHORIZED") from None
            logger.warning("authorizer failed: %s", type(exc).__name__)
            raise GatewayAnswer("AUTHORIZER_FAILURE") from None

    def _check_can_invoke_view_function(self, arn: str, auth_result: Any) -> bool:
        if super()._check_can_invoke_view_function(arn, auth_result):
            return True
        reason = str((auth_result.get("context") or {}).get(DENIAL_REASON, ""))
        raise GatewayAnswer("ACCESS_DENIED", reason=reason)


class EmulatedGateway(chalice.local.LocalGateway):
    def __init__(self, app_object: Chalice, config: Config) -> None:
        super().__init__(app_object, config)
        self._authorizer = EmulatedAuthorizer(app_object)
        self._app = app_object

    def handle_request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        try:
            response: dict[str, Any] = super().handle_request(method, path, headers, body)
        except GatewayAnswer as answer:
            return self._answer(answer)
        except ForbiddenError as exc:
            message = json.loads(exc.body or b"{}").get("message", "Forbidden")
            return self._answer(GatewayAnswer("DEFAULT_4XX", error=message), status=exc.CODE)
        return response

    def _answer(self, answer: GatewayAnswer, *, status: int | None = None) -> dict[str, Any]:
        response = _RESPONSES[answer.kind]
        rendered = (
            response.template.replace(f"$context.authorizer.{DENIAL_REASON}", answer.reason)
            # $context.error.messageString is a quoted JSON string.
            .replace("$context.error.messageString", json.dumps(answer.error))
        )
        headers = {
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "x-amzn-ErrorType": _ERROR_TYPES[answer.kind],
        }
        cors = self._app.api.cors
        if isinstance(cors, CORSConfig):
            headers |= {"Access-Control-Allow-Origin": cors.allow_origin, "Vary": "Origin"}
        return {
            "statusCode": response.status or status,
            "headers": headers,
            "multiValueHeaders": {},
            "body": json.dumps(json.loads(rendered)),
        }


def install() -> None:
    """Make ``chalice local`` servers and test clients created from now on use the emulation."""
    chalice.local.LocalGateway = EmulatedGateway  # type: ignore[misc]
    chalice.test.LocalGateway = EmulatedGateway  # type: ignore[attr-defined]
