"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Routes name their models (``answers.py`` for answers, ``payloads.py`` for request bodies): the
models, and pydantic with them, load when the document is built, not at every cold start."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chalicelib.items import STATUSES
from chalicelib.web.http import (
    DEFAULT_PAGE_SIZE,
    ETAG,
    MAX_PAGE_SIZE,
    MAX_USERNAME,
    RESOURCE_ID,
    SESSION_ID,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

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


_EMPTY = "Empty counts as absent."
# Every parameter a route names, by name: what a valid value looks like, from the patterns the
# edge checks. Ids in paths that do not have their shape answer 404 before they become keys.
_PARAMETERS: dict[str, dict[str, Any]] = {
    "item_id": {"schema": {"type": "string", "pattern": f"^{RESOURCE_ID.pattern}$"}},
    "upload_id": {"schema": {"type": "string", "pattern": f"^{RESOURCE_ID.pattern}$"}},
    "session_id": {"schema": {"type": "string", "pattern": f"^{SESSION_ID.pattern}$"}},
    "username": {"schema": {"type": "string", "minLength": 1, "maxLength": MAX_USERNAME}},
    "limit": {
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PAGE_SIZE,
            "default": DEFAULT_PAGE_SIZE,
        },
        "description": f"Page size. {_EMPTY}",
        "allowEmptyValue": True,
    },
    "status": {
        "schema": {"enum": list(STATUSES)},
        "description": f"Only items with this status. {_EMPTY}",
        "allowEmptyValue": True,
    },
    "cursor": {
        "schema": {"type": "string", "maxLength": 2048},
        "description": (
            "The `nextCursor` of the previous page, as given (opaque; any other value is 400). "
            f"{_EMPTY}"
        ),
        "allowEmptyValue": True,
    },
    "If-Match": {
        "schema": {"type": "string", "pattern": f"^{ETAG.pattern}$"},
        "description": 'The `ETag` of the item as read (`"3"`); `*` and lists are refused (412).',
    },
}


@dataclass(frozen=True, kw_only=True)
class Operation:
    """What the route table and a view's ``doc`` say about one method on one path."""

    method: str
    path: str
    summary: str
    # The class names of the answer's model (answers.py) and the request body's (payloads.py).
    response: str
    status: int = 200
    request: str | None = None
    errors: tuple[int, ...] = ()
    bearer: bool = False
    admin: bool = False
    query: tuple[str, ...] = field(default=())
    headers: tuple[str, ...] = field(default=())
    # Query parameters and headers of the above that a request must carry.
    required: tuple[str, ...] = field(default=())
    # Where the success body holds the id of what this creates (a JSON pointer, "/id"): the
    # document links it to every operation under `{path}/{id}`, so clients and fuzzers can chain.
    creates: str | None = None


def document(operations: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    # Here, not at the top: the models and pydantic load only for this document.
    from chalicelib import answers, payloads

    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(operations, key=lambda op: (op.path, op.method)):
        spec: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "responses": {
                str(op.status): _response("Success", getattr(answers, op.response), schemas),
                "500": _response("Internal server error", answers.Error, schemas),
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
                "content": {
                    "application/json": {"schema": _schema(getattr(payloads, op.request), schemas)}
                },
            }
            errors |= {400, 413, 415}
        for status in sorted(errors):
            spec["responses"][str(status)] = _response(_REASONS[status], answers.Error, schemas)
        parameters = [_parameter(name, "path", required=True) for name in _path_names(op.path)]
        parameters += [_parameter(name, "query", required=name in op.required) for name in op.query]
        parameters += [
            _parameter(name, "header", required=name in op.required) for name in op.headers
        ]
        if parameters:
            spec["parameters"] = parameters
        if op.creates is not None:
            spec["responses"][str(op.status)]["links"] = _links(op, operations)
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


def _path_names(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def _parameter(name: str, location: str, *, required: bool) -> dict[str, Any]:
    known = _PARAMETERS.get(name, {"schema": {"type": "string"}})
    parameter = {"name": name, "in": location, **known}
    if required:
        parameter["required"] = True
        if location == "query":
            # A required parameter must have a value: empty is absent, and refused.
            parameter["allowEmptyValue"] = False
    return parameter


def _links(creator: Operation, operations: list[Operation]) -> dict[str, Any]:
    """Links from what ``creator`` made to the operations on it: `{path}/{id}` and below."""
    links: dict[str, Any] = {}
    for op in sorted(operations, key=lambda op: (op.path, op.method)):
        match = re.fullmatch(re.escape(creator.path) + r"/{(\w+)}(/.*)?", op.path)
        if match is None:
            continue
        parameters = {match.group(1): f"$response.body#{creator.creates}"}
        if "If-Match" in op.headers:
            # The creating response's ETag is the version a conditional change is based on.
            parameters["header.If-Match"] = "$response.header.ETag"
        links[_operation_id(op)] = {"operationId": _operation_id(op), "parameters": parameters}
    return links


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}]", "", op.path).strip("/").replace("/", "_").replace("-", "_")
    return f"{op.method.lower()}_{words or 'root'}"


SCHEMA_REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    alternatives: tuple[type[BaseModel], ...] = getattr(model, "one_of", ())
    if alternatives:
        # An answer that is one of several models (answers.LoginAnswer).
        generated: dict[str, Any] = {
            "anyOf": [_schema(alternative, schemas) for alternative in alternatives],
            "description": inspect.getdoc(model),
            "title": model.__name__,
        }
    else:
        generated = model.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(generated.pop("$defs", {}))
    schemas[model.__name__] = generated
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def _response(description: str, model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _schema(model, schemas)}},
    }
