"""``chalice deploy --stage prod`` reads files generated from the CDK app's own definitions.

tools/chalice_prod.py writes the ``prod`` stage of .chalice/config.json and the two policies from
cdk/gatehouse_infra/runtime.py; tests/test_cdk.py checks them against the synthesized templates.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import app as app_module
from chalicelib.settings import Settings
from chalicelib.web.errors import HttpError
from tests.conftest import ROOT
from tools.chalice_prod import API_POLICY, ROTATION_POLICY, main, prod_stage, render

CHALICE = ROOT / ".chalice"
FILES = ("config.json", API_POLICY, ROTATION_POLICY)


def committed_stage() -> dict[str, Any]:
    stage: dict[str, Any] = json.loads((CHALICE / "config.json").read_text())["stages"]["prod"]
    return stage


def copy_of_chalice_dir(tmp_path: Path) -> Path:
    for name in FILES:
        shutil.copy(CHALICE / name, tmp_path / name)
    return tmp_path


def test_the_committed_files_are_what_the_generator_writes() -> None:
    for name, text in render((CHALICE / "config.json").read_text()).items():
        assert (CHALICE / name).read_text() == text, f"run make chalice-config: {name} is stale"


def test_check_finds_a_stale_file_and_writing_replaces_it(tmp_path: Path) -> None:
    chalice_dir = copy_of_chalice_dir(tmp_path)
    assert main(["--check"], chalice_dir=chalice_dir) == 0
    (chalice_dir / ROTATION_POLICY).write_text('{"Statement": []}\n')
    assert main(["--check"], chalice_dir=chalice_dir) == 1
    assert main([], chalice_dir=chalice_dir) == 0
    assert main(["--check"], chalice_dir=chalice_dir) == 0
    assert (chalice_dir / ROTATION_POLICY).read_text() == (CHALICE / ROTATION_POLICY).read_text()


def test_only_the_prod_stage_is_generated() -> None:
    config = json.loads((CHALICE / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["LOG_LEVEL"] = "DEBUG"
    config["stages"]["prod"] = {"lambda_memory_size": 128}
    rendered = json.loads(render(json.dumps(config))["config.json"])
    assert rendered["stages"]["dev"] == config["stages"]["dev"]
    assert rendered["stages"]["prod"] == prod_stage()
    assert {key: value for key, value in rendered.items() if key != "stages"} == {
        key: value for key, value in config.items() if key != "stages"
    }


def test_the_prod_stage_names_the_production_resources() -> None:
    stage = committed_stage()
    environment = stage["environment_variables"]
    assert environment["TABLE_NAME"] == "gatehouse-production"
    assert environment["JWT_SECRET_ID"] == "gatehouse/production/jwt-signing-key"
    assert stage["iam_policy_file"] == API_POLICY
    assert stage["lambda_functions"]["rotate_signing_key"]["iam_policy_file"] == ROTATION_POLICY
    assert stage["autogen_policy"] is False


def test_the_committed_stage_names_no_bucket_so_uploads_are_not_configured() -> None:
    """Bucket names are global: a default one could be someone else's, receiving our uploads."""
    environment = committed_stage()["environment_variables"]
    assert "UPLOADS_BUCKET" not in environment
    deps = app_module.Dependencies()
    vars(deps)["settings"] = Settings.from_env(environment)  # the cached property, as deployed
    with pytest.raises(HttpError) as refused:
        deps.uploads  # noqa: B018
    assert (refused.value.status, refused.value.message) == (
        503,
        "Uploads are not configured (UPLOADS_BUCKET)",
    )


def test_without_cloudfront_only_api_gateways_own_address_is_trusted() -> None:
    """No CDN and no edge key in front: a second X-Forwarded-For entry would be the client's."""
    environment = committed_stage()["environment_variables"]
    assert "EDGE_SECRET" not in environment
    assert environment["TRUSTED_PROXY_HOPS"] == "1"


def test_a_deployments_bucket_and_origin_fill_in_the_stage_and_the_policy_covers_them(
    tmp_path: Path,
) -> None:
    chalice_dir = copy_of_chalice_dir(tmp_path)
    bucket = "gatehouse-production-uploads-123456789012"
    arguments = ["--uploads-bucket", bucket, "--allowed-origins", "https://example.com"]
    assert main(arguments, chalice_dir=chalice_dir) == 0
    config = json.loads((chalice_dir / "config.json").read_text())
    environment = config["stages"]["prod"]["environment_variables"]
    assert environment["UPLOADS_BUCKET"] == bucket
    assert environment["ALLOWED_ORIGINS"] == "https://example.com"
    policy = json.loads((chalice_dir / API_POLICY).read_text())
    [listing] = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}", listing["Resource"])


def test_a_bucket_the_policy_does_not_cover_is_refused(tmp_path: Path) -> None:
    chalice_dir = copy_of_chalice_dir(tmp_path)
    with pytest.raises(SystemExit):
        main(["--uploads-bucket", "someone-elses-bucket"], chalice_dir=chalice_dir)
    assert (chalice_dir / "config.json").read_text() == (CHALICE / "config.json").read_text()


def test_every_grant_names_its_resources() -> None:
    for name in (API_POLICY, ROTATION_POLICY):
        for statement in json.loads((CHALICE / name).read_text())["Statement"]:
            resources = statement["Resource"]
            assert "*" not in (resources if isinstance(resources, list) else [resources])
            assert all("*" not in action for action in statement["Action"]), name
