"""The bytecode added to the Lambda zips (cdk/gatehouse_infra/bytecode.py)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdk"))
from gatehouse_infra.bytecode import (
    ENTRY_TIME,
    cache_path,
    compile_zip,
    is_unchecked_pyc,
    runtime_of_this_python,
)

SOURCES = {
    "app.py": "from pkg import mod\nANSWER = mod.VALUE\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "VALUE = 'from the bytecode'\n",
    "python2.py": "print 'not Python 3'\n",
    "data.txt": "not a module\n",
}


def package(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in SOURCES.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=ENTRY_TIME), text)
    return path


def test_each_module_gets_unchecked_hash_bytecode_where_python_looks(tmp_path: Path) -> None:
    archive = package(tmp_path / "deployment.zip")
    assert compile_zip(archive, runtime_of_this_python()) == 3
    with zipfile.ZipFile(archive) as done:
        names = set(done.namelist())
        added = names - set(SOURCES)
        assert added == {cache_path(name) for name in ("app.py", "pkg/__init__.py", "pkg/mod.py")}
        assert cache_path("pkg/mod.py") == f"pkg/__pycache__/mod.{sys.implementation.cache_tag}.pyc"
        assert all(is_unchecked_pyc(done.read(name)) for name in added)
    once = archive.read_bytes()
    assert compile_zip(archive, runtime_of_this_python()) == 3
    assert archive.read_bytes() == once


def test_bytecode_already_in_the_zip_is_replaced(tmp_path: Path) -> None:
    """``chalice package`` copies the working tree's timestamp pycs, which never match."""
    archive = package(tmp_path / "deployment.zip")
    stale = cache_path("pkg/mod.py")
    with zipfile.ZipFile(archive, "a") as adding:
        adding.writestr(zipfile.ZipInfo(stale, date_time=ENTRY_TIME), b"stale")
        adding.writestr(zipfile.ZipInfo("pkg/__pycache__/gone.cpython-38.pyc"), b"stale")
    compile_zip(archive, runtime_of_this_python())
    with zipfile.ZipFile(archive) as done:
        assert is_unchecked_pyc(done.read(stale))
        assert [name for name in done.namelist() if name.endswith(".pyc")] == [
            cache_path(name) for name in ("app.py", "pkg/__init__.py", "pkg/mod.py")
        ]


def test_the_interpreter_runs_the_bytecode_without_reading_the_source(tmp_path: Path) -> None:
    compile_zip(package(tmp_path / "deployment.zip"), runtime_of_this_python())
    task = tmp_path / "task"
    zipfile.ZipFile(tmp_path / "deployment.zip").extractall(task)
    # Were the source read, this is what the app would say.
    (task / "pkg" / "mod.py").write_text("VALUE = 'from the source'\n")
    answer = subprocess.run(
        [sys.executable, "-B", "-c", "import app; print(app.ANSWER)"],
        cwd=task,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert answer == "from the bytecode"


def test_the_same_sources_make_the_same_zip(tmp_path: Path) -> None:
    first, second = package(tmp_path / "a.zip"), package(tmp_path / "b.zip")
    compile_zip(first, runtime_of_this_python())
    compile_zip(second, runtime_of_this_python())
    assert first.read_bytes() == second.read_bytes()


def test_another_runtime_is_refused(tmp_path: Path) -> None:
    archive = package(tmp_path / "deployment.zip")
    before = archive.read_bytes()
    with pytest.raises(RuntimeError, match=r"python3\.99"):
        compile_zip(archive, "python3.99")
    assert archive.read_bytes() == before
