"""Business metrics: CloudWatch embedded-metric-format (EMF) lines, counted from security events.

An EMF line is one JSON object on stdout whose ``_aws`` member tells CloudWatch Logs which of its
other members are metric values (the namespace, the dimension names, the metric names and units);
CloudWatch extracts them from the Lambda log group, with no ``PutMetricData`` call and no
permission. The line goes out through the app's JSON log handler (``chalicelib/logs.py``), so it
is a bare JSON object: the Lambda runtime prefixes only the root logger's lines, which ours are
not. The extra ``level``, ``logger`` and ``message`` members are allowed by the format.

What is counted is what ``SecurityEvents`` stores (``EVENT_METRICS``): each event is counted once,
after its row is written, never the username or the address it concerns; the only dimension is
the deployment's environment, so each metric is one time series per deployment.

Written by hand rather than with a library: aws-lambda-powertools' ``Metrics`` adds about 22 ms
to the cold import and aws-embedded-metrics about 200 ms (it imports asyncio), measured on this
machine, against ``make bench``'s +150 ms budget for the whole app; each would also be a packaged
dependency for what is one ``json`` object per event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.clock import Clock, utc_now

NAMESPACE = "Gatehouse"
DIMENSION = "Environment"
UNIT = "Count"

SIGN_UPS = "SignUps"
LOGINS = "Logins"
LOGIN_FAILURES = "LoginFailures"
LOCKOUTS = "Lockouts"
MFA_FAILURES = "MfaFailures"
REFRESH_TOKEN_REUSE = "RefreshTokenReuse"  # noqa: S105 - a metric name
PASSWORD_RESETS = "PasswordResets"  # noqa: S105 - a metric name

# The security event kinds (chalicelib/events.py) counted, and the metric each counts into.
EVENT_METRICS = {
    "signup": SIGN_UPS,  # self-service and by an administrator
    "login": LOGINS,  # a session started: password alone, or password and second factor
    "login_failure": LOGIN_FAILURES,  # unknown name or wrong password
    "lockout": LOCKOUTS,  # a failure that started or lengthened the back-off
    "mfa_failure": MFA_FAILURES,  # a wrong second-factor code
    "refresh_reuse": REFRESH_TOKEN_REUSE,  # a rotated refresh token replayed: session revoked
    "password_reset": PASSWORD_RESETS,  # a password set through a mailed reset link
}
# Activity, then the failures and security signals (the dashboard draws them on two axes).
ACTIVITY = (SIGN_UPS, LOGINS, PASSWORD_RESETS)
SIGNALS = (LOGIN_FAILURES, LOCKOUTS, MFA_FAILURES, REFRESH_TOKEN_REUSE)
METRICS = (*ACTIVITY, *SIGNALS)

logger = logging.getLogger(__name__)
# Counts are not diagnostics: LOG_LEVEL=WARNING quietens the request log, not the metrics. The
# records still reach the "chalicelib" logger's JSON handler (handlers of ancestors ignore the
# ancestors' levels).
logger.setLevel(logging.INFO)


@dataclass(frozen=True)
class Metrics:
    """Writes the counts of one deployment (``environment``, its only dimension)."""

    environment: str
    clock: Clock = utc_now

    def count(self, names: Iterable[str]) -> None:
        """One EMF line counting each of ``names`` (a name given twice counts 2); none: no line."""
        counts = Counter(names)
        if counts:
            logger.info("metrics", extra={"fields": self.document(counts)})

    def document(self, counts: Counter[str]) -> dict[str, Any]:
        """The EMF object: the metadata, the dimension's value, each metric's value."""
        unknown = set(counts) - set(METRICS)
        if unknown:
            raise ValueError(f"not a business metric: {', '.join(sorted(unknown))}")
        return {
            "_aws": {
                "Timestamp": int(self.clock().timestamp() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [[DIMENSION]],
                        "Metrics": [{"Name": name, "Unit": UNIT} for name in counts],
                    }
                ],
            },
            DIMENSION: self.environment,
            **counts,
        }

    def count_events(self, kinds: Iterable[str]) -> None:
        """Count the security events of ``kinds`` that are business metrics."""
        self.count(EVENT_METRICS[kind] for kind in kinds if kind in EVENT_METRICS)


# For services built without the app's settings (tests, tools): the settings' default name.
LOCAL = Metrics("local")
