"""make audit's verdicts (tools/audit.py) on the reports pip-audit and npm audit print; the audit
itself needs the network and runs in the workflows, not here."""

from __future__ import annotations

from typing import Any

import pytest

from tools import audit
from tools.audit import Finding, Target, Unaudited, npm_findings, pip_findings

PIP_REPORT = {
    "dependencies": [
        {"name": "pyjwt", "version": "2.15.1", "vulns": []},
        {
            "name": "requests",
            "version": "2.31.0",
            "vulns": [
                {"id": "GHSA-9wx4-h78v-vm56", "fix_versions": ["2.32.0"], "aliases": []},
                {"id": "PYSEC-2099-1", "fix_versions": [], "aliases": []},
            ],
        },
    ],
    "fixes": [],
}
NPM_REPORT = {
    "auditReportVersion": 2,
    "vulnerabilities": {
        "cookie": {
            "name": "cookie",
            "via": [
                {"title": "cookie accepts names out of bounds", "url": "https://example/GHSA-1"}
            ],
            "range": "<0.7.0",
            "fixAvailable": {"name": "@sveltejs/kit", "version": "2.9.0", "isSemVerMajor": False},
        },
        "@sveltejs/kit": {
            "name": "@sveltejs/kit",
            "via": ["cookie"],
            "range": "<2.9.0",
            "fixAvailable": False,
        },
    },
}


def test_pip_findings_tell_fixed_from_unfixed_vulnerabilities() -> None:
    assert pip_findings("requirements.txt", PIP_REPORT) == [
        Finding("requirements.txt", "requests", "2.31.0", "GHSA-9wx4-h78v-vm56", "2.32.0"),
        Finding("requirements.txt", "requests", "2.31.0", "PYSEC-2099-1", ""),
    ]


def test_a_package_pip_audit_could_not_look_up_makes_the_target_unaudited() -> None:
    report = {"dependencies": [{"name": "pydantic", "skip_reason": "Dependency not found"}]}
    with pytest.raises(Unaudited, match=r"1 packages not audited, e\.g\. pydantic"):
        pip_findings("requirements.txt", report)


def test_npm_findings_name_the_advisory_or_the_package_it_comes_through() -> None:
    assert npm_findings("frontend", NPM_REPORT) == [
        Finding("frontend", "@sveltejs/kit", "<2.9.0", "through cookie", ""),
        Finding("frontend", "cookie", "<0.7.0", "https://example/GHSA-1", "@sveltejs/kit@2.9.0"),
    ]


def test_an_npm_audit_error_makes_the_target_unaudited() -> None:
    report = {
        "error": {"code": "ENOAUDIT", "summary": "Your configured registry does not support audit"}
    }
    with pytest.raises(Unaudited, match="does not support audit"):
        npm_findings("cdk", report)


@pytest.mark.parametrize(
    ("results", "status"),
    [
        ({"a": [], "b": []}, 0),
        ({"a": [Finding("a", "x", "1", "ADV-1", "")], "b": []}, 0),  # no fix yet: reported only
        ({"a": [Finding("a", "x", "1", "ADV-1", "1.1")], "b": []}, 1),
        ({"a": Unaudited("a: offline"), "b": []}, 2),
        ({"a": Unaudited("a: offline"), "b": [Finding("b", "y", "2", "ADV-2", "3")]}, 1),
    ],
)
def test_exit_status_fails_on_a_fixable_vulnerability_or_an_unaudited_target(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    results: dict[str, Any],
    status: int,
) -> None:
    def run(target: Target) -> list[Finding]:
        result = results[target.name]
        if isinstance(result, Exception):
            raise result
        found: list[Finding] = result
        return found

    monkeypatch.setattr(
        audit, "targets", lambda: [Target(n, [], audit.ROOT, "pip") for n in results]
    )
    monkeypatch.setattr(audit, "audit", run)
    assert audit.main() == status
    if status == 2:
        assert "NOT AUDITED: a: offline" in capsys.readouterr().out


def test_every_requirement_file_and_npm_project_is_a_target() -> None:
    commands = [" ".join(target.command) for target in audit.targets()]
    assert any("-r requirements.txt" in c for c in commands)
    assert any("--local" in c for c in commands)  # the dev venv: requirements-dev.txt, cdk/
    assert any("-r cdk/requirements-cfnlint.txt" in c for c in commands)
    npm = [t.cwd.name for t in audit.targets() if t.kind == "npm"]
    assert npm == ["frontend", "cdk"]
    assert all("--omit=dev" in t.command for t in audit.targets() if t.kind == "npm")
