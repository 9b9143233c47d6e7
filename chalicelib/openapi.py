"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chalicelib.items import STATUSES
from chalicelib.responses import Error

_REASONS = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    412: "Precondition failed (stale If-Match)",
    413: "Request body too large",
    415: "Unsupported media type",
    428: "If-Match required",
    429: "Too many requests (see Retry-After)",
    503: "Service temporarily unavailable",
}


_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "status": {"enum": list(STATUSES)},
}


@dataclass(frozen=True, kw_only=True)
class Operation:
    """What the route table and a view's ``doc`` say about one method on one path."""

    method: str
    path: str
    summary: str
    response: type[BaseModel]
    status: int = 200
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    bearer: bool = False
    admin: bool = False
    query: tuple[str, ...] = field(default=())
    headers: tuple[str, ...] = field(default=())


def document(operations: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(operations, key=lambda op: (op.path, op.method)):
        spec: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "responses": {
                str(op.status): _response("Success", op.response, schemas),
                "500": _response("Internal server error", Error, schemas),
            },
        }
        errors = set(op.errors) | {503}
        if op.bearer:
            spec["security"] = [{"bearer": []}]
            errors |= {401, 403}
        if op.admin:
            spec["description"] = "Requires the `admin` role."
        if op.request is not None:
            spec["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(op.request, schemas)}},
            }
            errors |= {400, 413, 415}
        for status in sorted(errors):
            spec["responses"][str(status)] = _response(_REASONS[status], Error, schemas)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        parameters += [
            {"name": name, "in": "query", "schema": _QUERY_SCHEMAS.get(name, {"type": "string"})}
            for name in op.query
        ]
        parameters += [
            {"name": name, "in": "header", "schema": {"type": "string"}} for name in op.headers
        ]
        if parameters:
            spec["parameters"] = parameters
        paths.setdefault(op.path, {})[op.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}]", "", op.path).strip("/").replace("/", "_").replace("-", "_")
    return f"{op.method.lower()}_{words or 'root'}"


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(generated.pop("$defs", {}))
    schemas[model.__name__] = generated
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _response(description: str, model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _schema(model, schemas)}},
    }
