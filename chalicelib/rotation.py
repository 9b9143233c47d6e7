"""Secrets Manager rotation of the JWT signing key (the four-step protocol).

Secrets Manager calls the rotation function four times with the same ``ClientRequestToken``:
createSecret stages a new random key as AWSPENDING, setSecret has nothing to do (no other system
holds the key), testSecret checks the pending key is usable, finishSecret moves AWSCURRENT to it.
The old key becomes AWSPREVIOUS, which verification still accepts, so no token is cut short.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = logging.getLogger(__name__)
KEY_BYTES = 48  # 384 random bits, base64url-encoded to 64 characters


class RotationError(Exception):
    """The rotation request does not fit the secret's state."""


class SigningKeyRotation:
    """Rotates ``secret_id`` (a name or an ARN) and refuses to touch any other secret."""

    def __init__(self, client: SecretsManagerClient, *, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def run(self, *, step: str, secret_id: str, token: str) -> None:
        description = self._client.describe_secret(SecretId=secret_id)
        # Secrets Manager sends the ARN; the configuration may name the secret either way.
        if self._secret_id not in {description["ARN"], description["Name"]}:
            raise RotationError("this function rotates only the configured signing key")
        stages = description.get("VersionIdsToStages", {})
        labels = stages.get(token)
        if labels is not None and "AWSCURRENT" in labels:
            logger.info("rotation step %s: the version is already current", step)
            return
        # createSecret may come before the version exists; every later step needs it pending.
        if step != "createSecret" and (labels is None or "AWSPENDING" not in labels):
            raise RotationError(f"version {token} is not staged AWSPENDING")
        steps = {
            "createSecret": self._create,
            "setSecret": lambda _secret_id, _token: None,
            "testSecret": self._test,
            "finishSecret": self._finish,
        }
        if step not in steps:
            raise RotationError(f"unknown rotation step {step!r}")
        steps[step](secret_id, token)
        logger.info("rotation step %s done", step)

    def _create(self, secret_id: str, token: str) -> None:
        try:
            self._client.get_secret_value(
                SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING"
            )
            return  # a retried call: the pending key already exists
        except self._client.exceptions.ResourceNotFoundException:
            pass
        self._client.put_secret_value(
            SecretId=secret_id,
            ClientRequestToken=token,
            SecretString=secrets.token_urlsafe(KEY_BYTES),
            VersionStages=["AWSPENDING"],
        )

    def _test(self, secret_id: str, token: str) -> None:
        pending = self._client.get_secret_value(
            SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING"
        )
        if len(pending.get("SecretString", "").encode()) < 32:
            raise RotationError("the pending signing key is shorter than 32 bytes")

    def _finish(self, secret_id: str, token: str) -> None:
        stages = self._client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
        current = next(version for version, labels in stages.items() if "AWSCURRENT" in labels)
        self._client.update_secret_version_stage(
            SecretId=secret_id,
            VersionStage="AWSCURRENT",
            MoveToVersionId=token,
            RemoveFromVersionId=current,
        )
