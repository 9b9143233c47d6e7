"""The site's Content-Security-Policy, shared by CloudFront (Site stack) and the local site server.

SvelteKit boots from a small inline script in each HTML shell, and its route announcer (an
``aria-live`` element) is hidden by an inline ``style`` attribute in its JavaScript. Rather than
allow every inline script or style, the policy lists the SHA-256 of exactly those, found in the
build; style attributes need ``'unsafe-hashes'`` for their hashes to count. No aws_cdk import
here: the local site server uses it too, so the browser tests run under the same policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

SPA_FALLBACK = "200.html"  # adapter-static's fallback page (frontend/svelte.config.js)
_STYLE_ATTRIBUTE = re.compile(r'style="([^"<>]*)"')
_INLINE = re.compile(r"<(script|style)(?![^>]*\bsrc=)[^>]*>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


def inline_hashes(site_dir: Path) -> dict[str, list[str]]:
    """CSP sources for the inline scripts and styles in the HTML shells (SvelteKit's boot)."""
    missing = [name for name in ("index.html", SPA_FALLBACK) if not (site_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"build the site first (make site): {', '.join(missing)} missing")
    pages = sorted(site_dir.rglob("*.html"))
    found: dict[str, set[str]] = {"script": set(), "style": set(), "style-attribute": set()}
    for page in pages:
        for kind, body in _INLINE.findall(page.read_text(encoding="utf-8")):
            found[kind.lower()].add(_source(body))
    for module in sorted(site_dir.glob("_app/immutable/**/*.js")):
        found["style-attribute"].update(
            _source(value) for value in _STYLE_ATTRIBUTE.findall(module.read_text("utf-8"))
        )
    return {kind: sorted(values) for kind, values in found.items()}


def _source(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


def content_security_policy(site_dir: Path, upload_hosts: list[str]) -> str:
    hashes = inline_hashes(site_dir)
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *hashes["script"]],
        "style-src": [
            "'self'",
            *hashes["style"],
            *(["'unsafe-hashes'", *hashes["style-attribute"]] if hashes["style-attribute"] else []),
        ],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'", *upload_hosts],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())
