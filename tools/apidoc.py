"""Writes docs/API.md, the human-readable API reference, from the generated OpenAPI document.

Run: ``.venv/bin/python -m tools.apidoc`` (a test fails when the file is out of date).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def render(spec: dict[str, Any]) -> str:
    lines = [
        f"# {spec['info']['title']} {spec['info']['version']}",
        "",
        "Generated from `GET /openapi.json` by `tools/apidoc.py`; do not edit by hand.",
        "Every error is JSON `{message}` (see `Error` below). Bearer routes need",
        "`Authorization: Bearer <access token>`.",
        "",
        "| method | path | auth | summary | success | errors |",
        "|---|---|---|---|---|---|",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            auth = "admin" if op.get("description") else ("bearer" if op.get("security") else "-")
            statuses = sorted(op["responses"])
            success = next(status for status in statuses if status.startswith("2"))
            errors = ", ".join(status for status in statuses if not status.startswith("2"))
            lines.append(
                f"| {method.upper()} | `{path}` | {auth} | {op['summary']} | {success} | {errors} |"
            )
    lines += ["", "## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        if name == "Answer":
            continue
        if "anyOf" in schema and "properties" not in schema:
            lines += [f"### {name}", "", f"One of: {_type(schema)}.", ""]
            continue
        lines += [f"### {name}", "", "| field | type | required |", "|---|---|---|"]
        required = set(schema.get("required", []))
        for field, definition in schema.get("properties", {}).items():
            lines.append(
                f"| `{field}` | {_type(definition)} | {'yes' if field in required else ''} |"
            )
        lines.append("")
    return "\n".join(lines)


def _type(definition: dict[str, Any]) -> str:
    if "$ref" in definition:
        return str(definition["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in definition:
        return " or ".join(_type(option) for option in definition["anyOf"])
    if "enum" in definition:
        return " \\| ".join(json.dumps(value) for value in definition["enum"])
    if "const" in definition:
        return json.dumps(definition["const"])
    if definition.get("type") == "array":
        return f"list of {_type(definition.get('items', {}))}"
    return str(definition.get("type", "any"))


def main() -> None:
    import app

    spec = app.openapi_document()
    TARGET.write_text(render(spec))
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
