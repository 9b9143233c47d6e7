from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

import app as app_module
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
