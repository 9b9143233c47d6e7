"""Inspect the Lambda packages in a synthesized cloud assembly:
``python -m tools.lambda_package DIR``.

The function's zip must hold our code only, and the layer Chalice makes of requirements.txt
(``automatic_layer``) the wheels, built for the function's CPU (the ELF header of every shared
object is read); neither anything that is only for development. Every module in both comes with
the bytecode its cold start would otherwise compile (``cdk/gatehouse_infra/bytecode.py``).
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdk"))
from gatehouse_infra.bytecode import cache_path, is_unchecked_pyc

# e_machine values in the ELF header, by Lambda architecture.
ELF_MACHINES = {"arm64": 183, "x86_64": 62}
REQUIRED = ("app.py", "chalicelib/__init__.py", "chalicelib/data/common-passwords.txt")
# Where a Python layer's packages unzip (/opt/python/lib/python3.X/site-packages), by runtime.
LAYER_ROOT = "python/lib/{runtime}/site-packages/"
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
    compiled_modules: int = 0
    problems: list[str] = field(default_factory=list)
    kind: str = "package"

    def summary(self) -> str:
        lines = [
            f"Lambda {self.kind} {self.path.name}: {self.compressed_bytes / 1e6:.1f} MB zipped, "
            f"{self.uncompressed_bytes / 1e6:.1f} MB unzipped, {self.files} files, "
            f"{len(self.shared_objects)} shared objects for {self.architecture}, "
            f"{self.compiled_modules} modules with their bytecode",
        ]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def find_package(assembly: Path, stack: str, function: str) -> tuple[Path, str]:
    """The zip and architecture of ``function`` in the stack's synthesized template."""
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    properties = template["Resources"][function]["Properties"]
    key = properties["CodeUri"]["Key"]
    return assembly / f"asset.{key}", properties.get("Architectures", ["x86_64"])[0]


@dataclass
class Layer:
    path: Path
    architectures: list[str]
    root: str  # the directory its packages are under, e.g. python/lib/python3.11/site-packages/


def find_layers(assembly: Path, stack: str, function: str) -> list[Layer]:
    """The layers of the stack's own that ``function`` uses (``Layers: [{"Ref": ...}]``)."""
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    resources = template["Resources"]
    found = []
    for layer in resources[function]["Properties"].get("Layers", []):
        properties = resources[layer["Ref"]]["Properties"]
        (runtime,) = properties["CompatibleRuntimes"]
        found.append(
            Layer(
                path=assembly / f"asset.{properties['ContentUri']['Key']}",
                architectures=properties.get("CompatibleArchitectures", ["x86_64"]),
                root=LAYER_ROOT.format(runtime=runtime),
            )
        )
    return found


def inspect(
    path: Path, architecture: str, *, required: tuple[str, ...] = REQUIRED, root: str = ""
) -> PackageReport:
    """A function's zip (``required`` files in it) or, with ``root``, a layer's (every file
    under ``root``, which is left out of the names checked)."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        report = PackageReport(
            path=path,
            architecture=architecture,
            compressed_bytes=path.stat().st_size,
            uncompressed_bytes=sum(info.file_size for info in infos),
            files=len(infos),
            kind="layer" if root else "package",
        )
        names = {info.filename for info in infos}
        report.problems += [f"{name} is missing" for name in required if name not in names]
        report.problems += [
            f"{name} is outside {root}" for name in names if not name.startswith(root)
        ]
        top_level = {name.removeprefix(root).split("/", 1)[0] for name in names}
        report.problems += [
            f"{name}/ is development-only" for name in sorted(top_level & FORBIDDEN_TOP_LEVEL)
        ]
        for name in sorted(names):
            if name.endswith(".so") or ".so." in name:
                machine = _elf_machine(archive.read(name)[:20])
                report.shared_objects[name] = machine
                if machine != ELF_MACHINES[architecture]:
                    report.problems.append(f"{name} is built for ELF machine {machine}")
            elif name.endswith(".py"):
                cached = cache_path(name)
                if cached in names and is_unchecked_pyc(archive.read(cached)[:8]):
                    report.compiled_modules += 1
                else:
                    report.problems.append(f"{name} has no bytecode for this Python")
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
    stack = stacks[0].removesuffix(".template.json")
    path, architecture = find_package(assembly, stack, "APIHandler")
    reports = [inspect(path, architecture)]
    for layer in find_layers(assembly, stack, "APIHandler"):
        report = inspect(layer.path, architecture, required=(), root=layer.root)
        if layer.architectures != [architecture]:
            report.problems.append(f"the layer is for {layer.architectures}, not {architecture}")
        reports.append(report)
    for report in reports:
        print(report.summary())
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
