"""The local mail viewer: every mail the app sent through SES to the emulator, newest first.

- ``GET /api/messages``: JSON, ``[{"id", "from", "to": [...], "subject", "text", "html",
  "sentAt"}]``, newest first (``sentAt`` ISO-8601, UTC). The browser tests read mail here.
- ``GET /``: a page listing each mail (subject, recipients, time) with its text and its HTML,
  the HTML in a sandboxed frame whose links open in a new tab.

Hand-written on the standard library: the app sends mail through the SES API, never SMTP, so the
usual local mail catchers (MailHog, Mailpit, aiosmtpd) would receive nothing; the emulator keeps
each mail (``tools/emulator.py``, ``GET /_local/mail``) and this only reads and shows it, asking
the emulator afresh on every request, so what it answers is never stale.

Run: ``python -m tools.mailviewer --host 127.0.0.1 --port 8025 --aws http://127.0.0.1:5000``.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.error
import urllib.request
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_PORT = 8025
# Where tools/emulator.py lists the mail it kept (oldest first).
MAILBOX_PATH = "/_local/mail"
_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)
# The HTML of a mail runs with no scripts, forms or same-origin access; its links open in a new,
# unsandboxed tab (a site refusing to be framed still opens).
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"


class EmulatorUnavailable(Exception):
    """The emulator did not answer with its mailbox."""


class MailSource:
    """The emulator's mailbox, read on demand."""

    def __init__(self, aws_url: str, *, timeout: float = 5) -> None:
        self._url = aws_url.rstrip("/") + MAILBOX_PATH
        self._timeout = timeout

    def newest_first(self) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout) as response:
                messages: list[dict[str, Any]] = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EmulatorUnavailable(f"{self._url}: {exc}") from exc
        # The emulator lists them in the order it accepted them.
        return messages[::-1]


def render_page(messages: list[dict[str, Any]]) -> str:
    items = "".join(_render_message(message) for message in messages) or (
        "<p>No mail yet. Sign up, or ask for a password reset, and reload.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Mail ({len(messages)})</title><style>{_STYLE}</style></head><body>"
        f'<h1>Mail sent by the local stack <a href="/">reload</a></h1>'
        f'<p>{len(messages)} messages, newest first; JSON at <a href="/api/messages">'
        "/api/messages</a>. The emulator keeps them in memory until it stops.</p>"
        f"{items}</body></html>"
    )


def _render_message(message: dict[str, Any]) -> str:
    html = message.get("html")
    text = message.get("text")
    frame = (
        f'<iframe sandbox="{SANDBOX}" title="HTML body" '
        f'srcdoc="{escape(_with_base_target(html))}"></iframe>'
        if html
        else "<p><em>no HTML body</em></p>"
    )
    return (
        f'<article id="{escape(str(message.get("id", "")))}"><details open><summary>'
        f"<strong>{escape(str(message.get('subject', '')))}</strong> "
        f"to {escape(', '.join(message.get('to', [])))} "
        f'<time datetime="{escape(str(message.get("sentAt", "")))}">'
        f"{escape(str(message.get('sentAt', '')))}</time></summary>"
        f"<p>From {escape(str(message.get('from', '')))}</p>"
        f'<div class="bodies"><section><h2>Text</h2>'
        f"<pre>{escape(text) if text else '(no text body)'}</pre></section>"
        f"<section><h2>HTML</h2>{frame}</section></div></details></article>"
    )


def _with_base_target(html: str) -> str:
    """Links in the frame open in a new tab rather than inside the frame."""
    base = '<base target="_blank">'
    found = _HEAD.search(html)
    return html[: found.end()] + base + html[found.end() :] if found else base + html


_STYLE = (
    "body{font-family:sans-serif;margin:1rem auto;max-width:80rem;padding:0 1rem}"
    "h1{font-size:1.3rem}h1 a{font-size:.9rem;margin-left:1rem}h2{font-size:1rem}"
    "article{border:1px solid #ccc;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}"
    "summary{cursor:pointer}time{color:#555;margin-left:.5rem}"
    ".bodies{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr))}"
    "pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.5rem}"
    "iframe{border:1px solid #ddd;height:22rem;width:100%}"
)


def handler_for(source: MailSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "GatehouseMail"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in ("/", "/api/messages"):
                self._answer(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
                return
            try:
                messages = source.newest_first()
            except EmulatorUnavailable as exc:
                body = json.dumps({"message": f"the AWS emulator is unavailable: {exc}"})
                self._answer(HTTPStatus.BAD_GATEWAY, "application/json", body.encode())
                return
            if path == "/api/messages":
                self._answer(HTTPStatus.OK, "application/json", json.dumps(messages).encode())
            else:
                page = render_page(messages).encode()
                self._answer(HTTPStatus.OK, "text/html; charset=utf-8", page)

        def _answer(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: ``make dev``'s terminal is for the API's log."""

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--aws", default="http://127.0.0.1:5000", help="the emulator's URL")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), handler_for(MailSource(args.aws)))
    server.serve_forever()


if __name__ == "__main__":
    main()
