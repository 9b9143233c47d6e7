"""``make job NAME=backup|sweep``: run one of the app's scheduled handlers once, now, in-process,
against the running ``make dev`` stack, with the event EventBridge's schedule sends.

The emulator's scheduled rules never fire, so this is how a job runs locally; deployed, the
schedule calls the same handler (``@app.schedule`` in ``app.py``). The job logs its own summary.

Run: ``AWS_ENDPOINT_URL=http://127.0.0.1:5000 python -m tools.job backup`` (``make job`` sets
the emulator's address, region and local credentials).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from chalice.app import Chalice, ScheduledEventConfig

from tools.eventrunner import lambda_context, load_app

# The job's name on the command line -> its handler in app.py.
JOBS = {"backup": "nightly_backup", "sweep": "upload_sweep"}
STAGE = "dev"
# moto's account, which the emulator's ARNs name.
ACCOUNT = "123456789012"


def scheduled_event(app: Chalice, handler: str, *, region: str, stage: str) -> dict[str, Any]:
    """What an EventBridge schedule rule sends to the handler's function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{app.app_name}-{stage}-{handler}"],
        "detail": {},
    }


def run_job(app: Chalice, handler: str, *, region: str, stage: str = STAGE) -> Any:
    """Call the scheduled handler ``handler`` of ``app`` once; what it returns."""
    scheduled = {
        config.name for config in app.event_sources if isinstance(config, ScheduledEventConfig)
    }
    if handler not in scheduled:
        raise LookupError(f"app.py has no scheduled handler {handler}")
    event = scheduled_event(app, handler, region=region, stage=stage)
    return app.handler_map[handler](event, lambda_context(app, handler, stage=stage))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, usage=f"make job NAME={'|'.join(JOBS)}")
    parser.add_argument("name", nargs="?", default="")
    args = parser.parse_args(argv)
    if args.name not in JOBS:
        print(f"usage: make job NAME={'|'.join(JOBS)}", file=sys.stderr)
        return 2
    if not os.environ.get("AWS_ENDPOINT_URL"):
        print("make job: AWS_ENDPOINT_URL must name the running emulator", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    app = load_app(STAGE)
    region = os.environ.get("AWS_DEFAULT_REGION", "eu-west-2")
    try:
        run_job(app, JOBS[args.name], region=region)
    except LookupError as exc:
        print(f"make job: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 (the job failed: its trace, and a failing exit)
        print(traceback.format_exc().rstrip(), file=sys.stderr)
        print(f"make job: {args.name} failed (is `make dev` running?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
