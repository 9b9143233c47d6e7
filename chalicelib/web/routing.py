"""Routes that document themselves: one decorator registers a view with Chalice, records what
it promises for the OpenAPI document, checks the admin role and turns errors into answers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from chalice.app import Chalice, ChaliceAuthorizer, Response

from chalicelib.web.errors import http_error
from chalicelib.web.http import Http, json_response
from chalicelib.web.openapi import Operation

View = TypeVar("View", bound=Callable[..., Response])


class Routes:
    """The app's route decorator; every route needs a bearer token unless it says otherwise."""

    def __init__(
        self,
        app: Chalice,
        http: Http,
        *,
        authorizer: ChaliceAuthorizer,
        api_key_required: bool,
    ) -> None:
        self._app = app
        self._http = http
        # Secure by default: a route without ``public=True`` needs a valid bearer token.
        self._authorizer = authorizer
        # With usage plans (cdk context apiKeys) API Gateway answers 403 to any request without
        # a key: CloudFront sends the site's own, machine clients each have theirs.
        self._api_key_required = api_key_required
        self._docs: dict[str, dict[str, Any]] = {}

    def __call__(
        self,
        spec: str,
        response: str,
        *,
        public: bool = False,
        admin: bool = False,
        paged: bool = False,
        if_match: Literal["required", "optional"] | None = None,
        errors: tuple[int, ...] = (),
        query: tuple[str, ...] = (),
        headers: tuple[str, ...] = (),
        required: tuple[str, ...] = (),
        **doc: Any,
    ) -> Callable[[View], View]:
        """Register the view for ``spec`` ("GET /items", "PUT,PATCH /users/{username}"), which
        answers ``response`` (a model of ``answers.py``, by name; ``request=``, one of
        ``payloads.py``); its docstring is the summary, ``doc`` the rest of its ``Operation``.
        ``admin``: the caller needs the admin role, in the authorizer's context and in the
        table at this moment (``Http.admin``); ``paged``: ``limit`` and ``cursor`` apply;
        ``if_match``: the change is conditional on an ``If-Match`` ETag (412 when stale, 428 when
        required and missing).
        """
        method, _, path = spec.partition(" ")

        def register(view: View) -> View:
            self._docs[view.__name__] = {
                "summary": (view.__doc__ or "").strip().rstrip("."),
                "response": response,
                "admin": admin,
                "errors": errors
                + ((403,) if admin else ())
                + ((400,) if paged else ())
                + {"required": (412, 428), "optional": (412,), None: ()}[if_match],
                "query": query + (("limit", "cursor") if paged else ()),
                "headers": headers + (("If-Match",) if if_match else ()),
                "required": required + (("If-Match",) if if_match == "required" else ()),
                **doc,
            }

            @functools.wraps(view)
            def handle(*args: Any, **kwargs: Any) -> Response:
                try:
                    if admin:
                        self._http.admin()
                    return view(*args, **kwargs)
                except Exception as exc:
                    error = http_error(exc)
                    if error is None:
                        raise
                    body = {"message": error.message, **error.extra}
                    return json_response(error.status, body, error.headers)

            self._app.route(
                path,
                methods=method.split(","),
                authorizer=None if public else self._authorizer,
                api_key_required=self._api_key_required,
            )(handle)
            return handle  # type: ignore[return-value]

        return register

    def operations(self) -> list[Operation]:
        """Every route of the route table with what its view promises (KeyError: undocumented)."""
        return [
            Operation(
                method=method,
                path=path,
                bearer=entry.authorizer is not None,
                **self._docs[entry.view_name],
            )
            for path, methods in self._app.routes.items()
            for method, entry in methods.items()
        ]
