"""What a cold start imports: pydantic and the models wait for the first request body or the
OpenAPI document (``make bench`` prints the import's time)."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from chalicelib import answers, responses
from chalicelib.deferred import Deferred
from tests.conftest import Api

LOADED_BY_IMPORT = """
import sys
import app
print(",".join(sorted(name for name in sys.modules if name.split(".")[0] == "pydantic"
                      or name in ("chalicelib.payloads", "chalicelib.answers"))))
"""


def test_importing_the_app_loads_neither_pydantic_nor_the_models() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_BY_IMPORT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert loaded == ""


def test_a_deferred_module_imports_on_first_read() -> None:
    module = Deferred("tests.deferred_target")
    assert "tests.deferred_target" not in sys.modules
    assert module.ANSWER == 42
    assert "tests.deferred_target" in sys.modules
    with pytest.raises(AttributeError):
        _ = module.MISSING


def test_a_body_is_still_validated_against_its_model(api: Api) -> None:
    response = api.post("/auth/signup", {"username": "x", "password": "long enough"})
    assert response.status_code == 400
    assert {error["field"] for error in response.json_body["errors"]} == {"username"}


def test_the_rendered_profile_has_the_profile_models_fields() -> None:
    hints = typing.get_type_hints(answers.Profile)
    assert tuple(answers.Profile.model_fields) == responses.PROFILE_FIELDS
    assert {name for name in responses.PROFILE_FIELDS if hints[name] is bool} == set(
        responses.PROFILE_FLAGS
    )
