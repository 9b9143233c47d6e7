"""Inspect the Lambda zip in a synthesized cloud assembly: ``python -m tools.lambda_package DIR``.

It must hold our code and the wheels from requirements.txt built for the function's CPU (the
ELF header of every shared object is read), and nothing that is only for development.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# e_machine values in the ELF header, by Lambda architecture.
ELF_MACHINES = {"arm64": 183, "x86_64": 62}
REQUIRED = ("app.py", "chalicelib/__init__.py", "chalicelib/data/common-passwords.txt")
# Development-only code and tools that must never reach the function (boto3 is the runtime's;
# chalice/ is Chalice's own small runtime, which it adds).
FORBIDDEN_TOP_LEVEL = frozenset(
    {
        "tests",
        "tools",
        "cdk",
        "frontend",
        "moto",
        "pytest",
        "_pytest",
        "boto3",
        "botocore",
        "aws_cdk",
        "jsii",
        "cdk_nag",
        "mypy",
        "ruff",
        "playwright",
        "zxcvbn",
    }
)


@dataclass
class PackageReport:
    path: Path
    architecture: str
    compressed_bytes: int
    uncompressed_bytes: int
    files: int
    shared_objects: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"Lambda package {self.path.name}: {self.compressed_bytes / 1e6:.1f} MB zipped, "
            f"{self.uncompressed_bytes / 1e6:.1f} MB unzipped, {self.files} files, "
            f"{len(self.shared_objects)} compiled modules for {self.architecture}",
        ]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def find_package(assembly: Path, stack: str, function: str) -> tuple[Path, str]:
    """The zip and architecture of ``function`` in the stack's synthesized template."""
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    properties = template["Resources"][function]["Properties"]
    key = properties["CodeUri"]["Key"]
    return assembly / f"asset.{key}", properties.get("Architectures", ["x86_64"])[0]


def inspect(path: Path, architecture: str) -> PackageReport:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        report = PackageReport(
            path=path,
            architecture=architecture,
            compressed_bytes=path.stat().st_size,
            uncompressed_bytes=sum(info.file_size for info in infos),
            files=len(infos),
        )
        names = {info.filename for info in infos}
        report.problems += [f"{name} is missing" for name in REQUIRED if name not in names]
        top_level = {name.split("/", 1)[0] for name in names}
        report.problems += [
            f"{name}/ is development-only" for name in sorted(top_level & FORBIDDEN_TOP_LEVEL)
        ]
        for name in sorted(names):
            if name.endswith(".so") or ".so." in name:
                machine = _elf_machine(archive.read(name)[:20])
                report.shared_objects[name] = machine
                if machine != ELF_MACHINES[architecture]:
                    report.problems.append(f"{name} is built for ELF machine {machine}")
    return report


def _elf_machine(header: bytes) -> int:
    if header[:4] != b"\x7fELF":
        return -1
    return int(struct.unpack_from("<H", header, 18)[0])


def main() -> int:
    assembly = Path(sys.argv[1] if len(sys.argv) > 1 else "cdk/cdk.out")
    stacks = sorted(path.name for path in assembly.glob("*-api.template.json"))
    if not stacks:
        print(f"no API stack template in {assembly}", file=sys.stderr)
        return 2
    report = inspect(
        *find_package(assembly, stacks[0].removesuffix(".template.json"), "APIHandler")
    )
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
