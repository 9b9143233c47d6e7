"""Every answer the in-process tests receive, checked against the OpenAPI document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    template: str
    responses: dict[str, Any]


class Contract:
    """The document's promise for each (method, path, status), as a JSON Schema validator."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._components = document["components"]
        self._routes = [
            _Route(
                method.upper(),
                re.compile(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path))),
                path,
                spec["responses"],
            )
            for path, methods in document["paths"].items()
            for method, spec in methods.items()
        ]
        self._validators: dict[tuple[str, str, str], Draft202012Validator] = {}

    def check(self, method: str, path: str, status: int, body: bytes) -> None:
        """Fail unless the answer is one the document states, in the shape it states."""
        route = self._route(method.upper(), path.split("?")[0])
        if route is None:
            return  # not an API route: API Gateway's own "Missing Authentication Token"
        where = f"{method} {route.template} answered {status}"
        assert str(status) in route.responses, f"{where}, which the document does not state"
        validator = self._validator(route, str(status))
        errors = [error.message for error in validator.iter_errors(json.loads(body or b"null"))]
        assert not errors, f"{where} in a shape the document does not state: {errors}"

    def _route(self, method: str, path: str) -> _Route | None:
        for route in self._routes:
            if route.method == method and route.pattern.fullmatch(path):
                return route
        return None

    def _validator(self, route: _Route, status: str) -> Draft202012Validator:
        key = (route.method, route.template, status)
        if key not in self._validators:
            schema = route.responses[status]["content"]["application/json"]["schema"]
            self._validators[key] = Draft202012Validator({**schema, "components": self._components})
        return self._validators[key]
