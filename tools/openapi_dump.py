"""Writes the OpenAPI document the API serves at ``GET /openapi.json`` to a file.

The site's types (``frontend/src/lib/api-schema.d.ts``) are generated from it by
openapi-typescript: ``make api-types`` (or ``npm run gen:api`` in ``frontend/``) runs both steps,
and ``tests/test_openapi.py`` fails when either committed file is out of date.

Run: ``.venv/bin/python -m tools.openapi_dump frontend/src/lib/openapi.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "frontend" / "src" / "lib" / "openapi.json"


def served_document() -> dict[str, Any]:
    """What ``GET /openapi.json`` answers."""
    import app

    return app.openapi_document()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, nargs="?", default=TARGET)
    args = parser.parse_args()
    args.path.write_text(render(served_document()), encoding="utf-8")
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
