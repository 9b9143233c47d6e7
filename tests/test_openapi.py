from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

import app as app_module
from chalicelib.web.http import RESOURCE_ID, SESSION_ID
from chalicelib.web.openapi import Operation, document
from tests.conftest import Api
from tools import openapi_dump
from tools.apidoc import TARGET, render


def spec(api: Api) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json_body)


def test_the_document_is_valid_openapi_3_1(api: Api) -> None:
    document = spec(api)
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_with_schemas_and_errors(api: Api) -> None:
    document = spec(api)
    schemas = document["components"]["schemas"]
    routes = [
        (path, method) for path, methods in app_module.app.routes.items() for method in methods
    ]
    assert len(routes) > 30
    for path, method in routes:
        operation = document["paths"][path][method.lower()]
        responses = operation["responses"]
        success = [status for status in responses if status.startswith("2")]
        assert len(success) == 1, (path, method)
        assert {"500", "503"} <= set(responses)
        for response in responses.values():
            name = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            assert name in schemas
        entry = app_module.app.routes[path][method]
        if entry.authorizer is not None:
            assert operation["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(responses)
        if "requestBody" in operation:
            assert "400" in responses


def test_the_models_drive_the_schemas(api: Api) -> None:
    schemas = spec(api)["components"]["schemas"]
    signup = schemas["SignupRequest"]
    assert signup["properties"]["username"]["pattern"] == "^[A-Za-z0-9._-]+$"
    assert signup["properties"]["password"]["maxLength"] == 256
    assert signup["additionalProperties"] is False
    assert set(schemas["ItemView"]["properties"]) >= {"id", "name", "data", "status", "version"}


def test_the_human_readable_reference_is_current(api: Api) -> None:
    assert TARGET.read_text() == render(spec(api)), "run: .venv/bin/python -m tools.apidoc"


def test_the_sites_copy_of_the_document_and_its_types_are_current(tmp_path: Path) -> None:
    stale = "the site's OpenAPI document or its TypeScript types are stale: run `make api-types`"
    document = tmp_path / "openapi.json"
    document.write_text(openapi_dump.render(openapi_dump.served_document()), encoding="utf-8")
    assert openapi_dump.TARGET.read_text(encoding="utf-8") == document.read_text("utf-8"), stale
    frontend = openapi_dump.TARGET.parents[2]
    if not (frontend / "node_modules" / "openapi-typescript").is_dir():
        pytest.fail("frontend/node_modules is missing openapi-typescript: run `make install`")
    generated = subprocess.run(
        ["node", "scripts/api-types.js", str(document), "-"],
        cwd=frontend,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert (frontend / "src" / "lib" / "api-schema.d.ts").read_text("utf-8") == generated, stale


def test_creating_operations_link_to_the_operations_on_what_they_made() -> None:
    def op(method: str, path: str, **extra: Any) -> Operation:
        return Operation(method=method, path=path, summary=path, response="Message", **extra)

    built = document(
        [
            op("POST", "/things", creates="/thing/id", status=201),
            op("GET", "/things/{thing_id}"),
            op("PUT", "/things/{thing_id}", headers=("If-Match",), required=("If-Match",)),
            op("POST", "/things/{thing_id}/done"),
            op("GET", "/things"),
            op("GET", "/other/{thing_id}"),
        ],
        title="t",
        version="1",
    )
    links = built["paths"]["/things"]["post"]["responses"]["201"]["links"]
    assert links == {
        "get_things_thing_id": {
            "operationId": "get_things_thing_id",
            "parameters": {"thing_id": "$response.body#/thing/id"},
        },
        "post_things_thing_id_done": {
            "operationId": "post_things_thing_id_done",
            "parameters": {"thing_id": "$response.body#/thing/id"},
        },
        "put_things_thing_id": {
            "operationId": "put_things_thing_id",
            "parameters": {
                "thing_id": "$response.body#/thing/id",
                "header.If-Match": "$response.header.ETag",
            },
        },
    }
    put = built["paths"]["/things/{thing_id}"]["put"]
    assert {"name": "If-Match", "in": "header", "required": True}.items() <= put["parameters"][
        1
    ].items()
    validate(built)


def test_parameters_state_their_formats_and_what_an_empty_value_means(api: Api) -> None:
    served = spec(api)
    item = served["paths"]["/items/{item_id}"]["get"]["parameters"][0]
    assert item["schema"]["pattern"] == f"^{RESOURCE_ID.pattern}$"
    session = served["paths"]["/auth/sessions/{session_id}"]["delete"]["parameters"][0]
    assert session["schema"]["pattern"] == f"^{SESSION_ID.pattern}$"
    query = {p["name"]: p for p in served["paths"]["/items"]["get"]["parameters"]}
    assert all(p["allowEmptyValue"] is True for p in query.values())
    assert "Empty counts as absent" in query["cursor"]["description"]
    required = served["paths"]["/admin/items"]["get"]["parameters"]
    status = next(p for p in required if p["name"] == "status")
    assert (status["required"], status["allowEmptyValue"]) == (True, False)
    # What the document says is what the API does: empty values are the defaults.
    api.signup("alice")
    token = api.login("alice")
    listed = api.get("/items?cursor=&limit=&status=", token)
    assert listed.status_code == 200
    assert listed.json_body == {"items": [], "nextCursor": None}


def test_no_constraint_leaks_out_of_json_schema(api: Api) -> None:
    """pydantic writes a constraint it cannot place (say, after a validator) as its own name."""

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {key for value in node.values() for key in keys(value)}
        if isinstance(node, list):
            return {key for value in node for key in keys(value)}
        return set()

    assert keys(spec(api)["components"]["schemas"]) & {"ge", "gt", "le", "lt", "strict"} == set()


def test_only_the_routes_that_must_be_public_are() -> None:
    public = {(op.method, op.path) for op in app_module.route.operations() if not op.bearer}
    assert public == {
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("POST", "/auth/signup"),
        ("POST", "/auth/login"),
        ("POST", "/auth/login/mfa"),
        ("POST", "/auth/refresh"),
        # The token in a mailed link is the credential.
        ("POST", "/auth/email/verify"),
        ("POST", "/auth/password/forgot"),
        ("POST", "/auth/password/reset"),
    }
