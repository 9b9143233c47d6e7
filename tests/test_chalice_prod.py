"""``chalice deploy --stage prod`` reads files generated from the CDK app's own definitions.

tools/chalice_prod.py writes the ``prod`` stage of .chalice/config.json and the two policies from
cdk/gatehouse_infra/runtime.py; tests/test_cdk.py checks them against the synthesized templates.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import app as app_module
from chalicelib.settings import Settings
from chalicelib.web.errors import HttpError
from tests.conftest import ROOT
from tools.chalice_prod import (
    API_POLICY,
    ROTATION_POLICY,
    handler_policy,
    main,
    prod_stage,
    render,
)

sys.path.insert(0, str(ROOT / "cdk"))  # done by tools.chalice_prod too; said here for readers
from gatehouse_infra import runtime

CHALICE = ROOT / ".chalice"
FILES = tuple(render((CHALICE / "config.json").read_text()))
POLICIES = tuple(name for name in FILES if name != "config.json")


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
    assert {API_POLICY, ROTATION_POLICY} < set(POLICIES)
    unscoped = []
    for name in POLICIES:
        for statement in json.loads((CHALICE / name).read_text())["Statement"]:
            resources = statement["Resource"]
            assert all("*" not in action for action in statement["Action"]), name
            if resources == "*":
                # IAM authorizes these on "*" only; nothing else may share the statement.
                assert set(statement["Action"]) <= set(runtime.UNSCOPED_ACTIONS), name
                unscoped += statement["Action"]
                continue
            assert "*" not in (resources if isinstance(resources, list) else [resources])
    assert sorted(unscoped) == sorted(runtime.UNSCOPED_ACTIONS)


def test_each_event_handler_has_its_own_policy_and_timeout() -> None:
    functions = committed_stage()["lambda_functions"]
    for handler in runtime.EVENT_HANDLERS:
        assert functions[handler.name] == {
            "iam_policy_file": handler_policy(handler),
            "lambda_timeout": handler.timeout,
        }
        assert (CHALICE / handler_policy(handler)).exists()
    stream = json.loads((CHALICE / handler_policy(runtime.STREAM_HANDLER)).read_text())
    sids = {statement["Sid"]: statement for statement in stream["Statement"]}
    assert (
        sids["PutEvents"]["Resource"] == "arn:aws:events:*:*:event-bus/gatehouse-production-events"
    )
    assert sids["ReadStream"]["Resource"] == (
        "arn:aws:dynamodb:*:*:table/gatehouse-production/stream/*"
    )
    assert "Table" not in sids


def test_the_committed_stage_names_the_bus_and_queues_but_no_deploy_time_values() -> None:
    """The stream's ARN, the backups bucket and the WebSocket URL exist only once deployed;
    without the stream's ARN app.py packages a placeholder (cdk/README.md, "The API alone")."""
    environment = committed_stage()["environment_variables"]
    assert environment["EVENT_BUS_NAME"] == "gatehouse-production-events"
    assert environment["NOTIFY_QUEUE"] == "gatehouse-production-notify"
    assert environment["MAIL_QUEUE"] == "gatehouse-production-mail"
    assert environment["PURGE_QUEUE"] == "gatehouse-production-purge"
    for name in ("TABLE_STREAM_ARN", "BACKUPS_BUCKET", "WEBSOCKET_URL", "WEBSOCKET_ENDPOINT"):
        assert name not in environment
    Settings.from_env(environment)  # valid as it is


def test_a_deployments_stream_bucket_and_websocket_fill_in_the_stage(tmp_path: Path) -> None:
    chalice_dir = copy_of_chalice_dir(tmp_path)
    stream = (
        "arn:aws:dynamodb:eu-west-2:123456789012:table/gatehouse-production/stream/"
        "2026-12-01T00:00:00.000"
    )
    websocket = "wss://abc123.execute-api.eu-west-2.amazonaws.com/api"
    arguments = [
        "--table-stream-arn",
        stream,
        "--backups-bucket",
        "gatehouse-production-data-backupse2ba9ba2-1x2y3z",
        "--websocket-url",
        websocket,
    ]
    assert main(arguments, chalice_dir=chalice_dir) == 0
    config = json.loads((chalice_dir / "config.json").read_text())
    environment = config["stages"]["prod"]["environment_variables"]
    assert environment["TABLE_STREAM_ARN"] == stream
    assert environment["WEBSOCKET_URL"] == websocket
    assert environment["WEBSOCKET_ENDPOINT"] == (
        "https://abc123.execute-api.eu-west-2.amazonaws.com/api"
    )
    settings = Settings.from_env(environment)
    assert settings.backups_bucket == "gatehouse-production-data-backupse2ba9ba2-1x2y3z"
    policy = json.loads((chalice_dir / handler_policy(runtime.STREAM_HANDLER)).read_text())
    [read] = [s for s in policy["Statement"] if s["Sid"] == "ReadStream"]
    assert read["Resource"] == stream
    backup = json.loads((chalice_dir / handler_policy(runtime.BACKUP_HANDLER)).read_text())
    [write] = [s for s in backup["Statement"] if s["Sid"] == "WriteExport"]
    assert fnmatch.fnmatchcase(
        "arn:aws:s3:::gatehouse-production-data-backupse2ba9ba2-1x2y3z/backups/database/x",
        write["Resource"],
    )


@pytest.mark.parametrize(
    "arguments",
    [
        ["--table-stream-arn", "arn:aws:dynamodb:eu-west-2:123456789012:table/other/stream/x"],
        ["--backups-bucket", "someone-elses-bucket"],
        ["--websocket-url", "https://abc123.execute-api.eu-west-2.amazonaws.com/api"],
        ["--websocket-url", "wss://abc123.execute-api.eu-west-2.amazonaws.com/ws"],
    ],
)
def test_deploy_time_values_the_policies_do_not_cover_are_refused(
    tmp_path: Path, arguments: list[str]
) -> None:
    chalice_dir = copy_of_chalice_dir(tmp_path)
    with pytest.raises(SystemExit):
        main(arguments, chalice_dir=chalice_dir)
    assert (chalice_dir / "config.json").read_text() == (CHALICE / "config.json").read_text()
