"""Compiled bytecode in the Lambda zips, so a cold start does not compile what it imports.

Lambda unpacks a function's code and its layers read-only (``/var/task``, ``/opt``): Python
cannot write ``__pycache__`` there, so from zips of sources only, every cold start compiles every
module it imports, ours and the layer's, again. On this machine that is about 150 ms more for the
app's import and 200-300 ms more for the first request body (pydantic); Lambda's share of a CPU
at 1,024 MB is about half of one of these cores.

``chalice package`` zips sources only, so each zip gets, beside every ``.py``, the ``.pyc`` the
runtime's interpreter looks for. They are unchecked-hash pycs (PEP 552): the interpreter loads
them without reading the source or comparing times (what a zip does to mtimes does not matter),
which is right where sources and bytecode are only ever shipped together. Compiling needs the
runtime's Python version: ``compile_zip`` refuses another one.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

# Fixed entry times keep the zip (and so the asset's hash) the same for the same sources.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)


def runtime_of_this_python() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def cache_path(source: str) -> str:
    """Where the interpreter looks for ``source``'s bytecode (``a/b.py`` ->
    ``a/__pycache__/b.cpython-311.pyc``), whatever PYTHONPYCACHEPREFIX says here."""
    path = PurePosixPath(source)
    tag = sys.implementation.cache_tag
    return str(path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc").removeprefix("./")


def compile_zip(archive: Path, runtime: str) -> int:
    """Rewrite ``archive`` with the unchecked-hash bytecode of each of its ``.py`` files, in
    place of any ``__pycache__`` it held (``chalice package`` copies the working tree's, whose
    timestamps the zip's entry times never match); return how many modules were compiled. A
    source that does not compile (a package's file for another Python) is left without: its
    import would fail with or without bytecode."""
    if runtime != runtime_of_this_python():
        raise RuntimeError(
            f"the functions run {runtime}, synthesis {runtime_of_this_python()}: "
            "synthesize with the runtime's Python, or its bytecode would be ignored"
        )
    with zipfile.ZipFile(archive) as existing:
        entries = [
            (info, existing.read(info))
            for info in existing.infolist()
            if "__pycache__/" not in info.filename
        ]
    compiled = _compiled(
        {info.filename: data for info, data in entries if info.filename.endswith(".py")}
    )
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info, data in entries:
            target.writestr(info, data)
        for name, data in compiled.items():
            entry = zipfile.ZipInfo(name, date_time=ENTRY_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, data)
    return len(compiled)


def _compiled(sources: dict[str, bytes]) -> dict[str, bytes]:
    """Each source's bytecode by the path the interpreter looks for it at."""
    compiled = {}
    with tempfile.TemporaryDirectory(prefix="gatehouse-bytecode-") as scratch:
        source, target = Path(scratch, "source.py"), Path(scratch, "source.pyc")
        for name, text in sorted(sources.items()):
            source.write_bytes(text)
            try:
                py_compile.compile(
                    str(source),
                    cfile=str(target),
                    dfile=name,
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
                )
            except py_compile.PyCompileError:
                continue
            compiled[cache_path(name)] = target.read_bytes()
    return compiled


def is_unchecked_pyc(data: bytes) -> bool:
    """Bytecode for this interpreter that it loads without its source (PEP 552 flags 0b01)."""
    return data[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(data[4:8], "little") == 1
