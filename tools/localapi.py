"""``chalice local`` for a stage, with the local site's origin allowed to refresh by cookie.

``chalice local`` copies the stage's environment variables from ``.chalice/config.json`` over the
process environment, so the dev stage's ``ALLOWED_ORIGINS`` (the default site port) always wins.
The site's port is a setting (``SITE_PORT``) and the tests run it on a free port, so this builds
the same server through Chalice's own factory and lets ``LOCAL_ALLOWED_ORIGINS`` replace that one
variable. Everything else is what ``chalice local --no-autoreload`` runs, with a listen backlog
that survives a burst of simultaneous clients and API Gateway's own answers to authorizer
denials (``tools/localgateway.py``).

Run: ``python -m tools.localapi --host 127.0.0.1 --port 8000 --stage dev``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from chalice import local
from chalice.app import Chalice
from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory

from tools import localgateway

ROOT = Path(__file__).resolve().parent.parent
OVERRIDE = "LOCAL_ALLOWED_ORIGINS"


class _Factory(CLIFactory):
    def load_chalice_app(
        self,
        environment_variables: MutableMapping[str, str] | None = None,
        validate_feature_flags: bool | None = True,
    ) -> Chalice:
        origins = os.environ.get(OVERRIDE)
        if environment_variables is not None and origins:
            environment_variables = {**environment_variables, "ALLOWED_ORIGINS": origins}
        return super().load_chalice_app(environment_variables, validate_feature_flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    # As `chalice local` does: the app's log lines on stdout.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    # socketserver's listen backlog is 5: a burst of simultaneous clients (a page's parallel
    # calls, the signup race test) overflows it and connections are reset.
    local.ThreadedHTTPServer.request_queue_size = 128
    # Authorizer denials and failures answered as the deployed gateway responses answer them.
    localgateway.install()
    factory = _Factory(str(ROOT), environ=os.environ)
    server = create_local_server(factory, args.host, args.port, args.stage)
    server.serve_forever()


if __name__ == "__main__":
    main()
