"""``make audit``: known vulnerabilities in what the project installs, from PyPI's and npm's
advisory services (so it needs the network: the deploy workflow runs it, and people by hand).

Audited: the Lambda's packages (requirements.txt, all pinned), the dev venv that
requirements-dev.txt and cdk/requirements.txt install (with everything they pull in), cfn-lint's
venv (cdk/requirements-cfnlint.txt), and the production packages of the site (frontend/) and of
the CDK app (cdk/), ``npm audit --omit=dev``.

Exit status: 1 when a vulnerability has a fixed version to move to; 2 when a target could not be
audited at all (no network, a package the advisory service does not know): unaudited is not
clean. A vulnerability without a fix is printed and does not fail the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"
TIMEOUT = 600  # seconds per target: pip-audit asks PyPI once per package


@dataclass(frozen=True)
class Finding:
    target: str
    package: str
    version: str
    advisory: str
    fixed_in: str  # "" when no fix is known

    @property
    def fixable(self) -> bool:
        return bool(self.fixed_in)


@dataclass(frozen=True)
class Target:
    name: str
    command: Sequence[str]
    cwd: Path
    kind: str  # "pip" or "npm"


class Unaudited(Exception):
    """A target's audit did not run to the end; the message says why."""


def targets() -> list[Target]:
    pip = [str(PIP_AUDIT), "--format", "json", "--progress-spinner", "off"]
    npm = ["npm", "audit", "--omit=dev", "--json"]
    return [
        # Every package is pinned there: audited as listed, no resolution.
        Target("requirements.txt", [*pip, "--no-deps", "-r", "requirements.txt"], ROOT, "pip"),
        # What requirements-dev.txt (and cdk/requirements.txt) installed, dependencies included.
        Target("dev venv", [*pip, "--local"], ROOT, "pip"),
        Target(
            "cdk/requirements-cfnlint.txt",
            [*pip, "--no-deps", "-r", "cdk/requirements-cfnlint.txt"],
            ROOT,
            "pip",
        ),
        Target("frontend (npm)", npm, ROOT / "frontend", "npm"),
        Target("cdk (npm)", npm, ROOT / "cdk", "npm"),
    ]


def pip_findings(target: str, report: dict[str, Any]) -> list[Finding]:
    """pip-audit's JSON: ``dependencies`` with ``vulns`` (each with ``fix_versions``), or with a
    ``skip_reason`` when the package could not be looked up."""
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list):
        raise Unaudited(f"{target}: pip-audit printed no dependency list")
    skipped = [f"{d['name']}: {d['skip_reason']}" for d in dependencies if "skip_reason" in d]
    if skipped:
        raise Unaudited(f"{target}: {len(skipped)} packages not audited, e.g. {skipped[0]}")
    return [
        Finding(
            target=target,
            package=dependency["name"],
            version=dependency["version"],
            advisory=vuln["id"],
            fixed_in=", ".join(vuln.get("fix_versions") or []),
        )
        for dependency in dependencies
        for vuln in dependency.get("vulns", [])
    ]


def npm_findings(target: str, report: dict[str, Any]) -> list[Finding]:
    """npm audit's JSON (report version 2): ``vulnerabilities`` by package, each with ``via``
    (advisories, or the names of the vulnerable packages it depends on) and ``fixAvailable``."""
    if "error" in report or not isinstance(report.get("vulnerabilities"), dict):
        error = report.get("error")
        summary = error.get("summary", error) if isinstance(error, dict) else error
        raise Unaudited(f"{target}: npm audit failed: {summary}")
    findings: list[Finding] = []
    for name, entry in sorted(report["vulnerabilities"].items()):
        via = entry.get("via") or []
        # An advisory of its own, or only through the vulnerable packages it depends on.
        advisories = [
            str(item.get("url") or item.get("title")) for item in via if isinstance(item, dict)
        ] or [f"through {', '.join(map(str, via))}"]
        fix = entry.get("fixAvailable")
        if isinstance(fix, dict):
            fixed_in = f"{fix.get('name')}@{fix.get('version')}"
        else:
            fixed_in = "npm audit fix" if fix else ""
        findings.extend(
            Finding(
                target=target,
                package=name,
                version=str(entry.get("range", "")),
                advisory=advisory,
                fixed_in=fixed_in,
            )
            for advisory in advisories
        )
    return findings


def audit(target: Target) -> list[Finding]:
    try:
        result = subprocess.run(
            target.command,
            cwd=target.cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unaudited(f"{target.name}: {error}") from None
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unaudited(f"{target.name}: exit {result.returncode}: {detail}") from None
    parse = pip_findings if target.kind == "pip" else npm_findings
    return parse(target.name, report)


def main() -> int:
    findings: list[Finding] = []
    failures: list[str] = []
    for target in targets():
        print(f"auditing {target.name} ...", flush=True)
        try:
            found = audit(target)
        except Unaudited as error:
            failures.append(str(error))
            print(f"  NOT AUDITED: {error}", flush=True)
            continue
        findings.extend(found)
        print(f"  {len(found)} known vulnerabilities", flush=True)
    for finding in findings:
        fix = f"fixed in {finding.fixed_in}" if finding.fixable else "no fix yet"
        print(f"{finding.target}: {finding.package} {finding.version} {finding.advisory} ({fix})")
    fixable = [finding for finding in findings if finding.fixable]
    if fixable:
        print(f"{len(fixable)} vulnerabilities have a fix: upgrade those packages")
        return 1
    if failures:
        print(f"{len(failures)} targets not audited: the advisory services need the network")
        return 2
    print("no known vulnerability with a fix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
