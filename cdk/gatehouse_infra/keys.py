"""The ``kmsKey`` switch's key: one customer-managed, multi-Region KMS key with rotation on, and
its replica in each region the table or the signing key is replicated to.

A multi-Region key (MRK) and its replicas share key id and key material, so a replica region's
table and secret are encrypted under "the same" key, each through the replica beside it (KMS is
regional). The primary lives in a stack of its own (``gatehouse-<env>-keys``) in the primary
region, each replica in a small stack in its region (``gatehouse-<env>-keys-<region>``); the data
stack comes after them all, because the global table names the key of every replica when it is
created. The key is kept when its stack goes (``Retain``): data encrypted under it would be lost
with it.

The key policy (cdk/README.md, "Encryption: kmsKey", has it statement by statement): CDK v2's
default, the account may administer and use the key, which delegates every use to IAM policies;
the two statements CDK's ``Secret`` adds for the signing key (the account's principals, through
Secrets Manager only: ``kms:ViaService``, no other condition); and the two of
``encryption.service_statements`` (CloudWatch Logs, EventBridge to the queues), each on this
deployment's resources only. Each role gets from its own IAM policy only the operations it
needs, through the services it calls (``kms:ViaService``): ``grant_key_use``,
``grant_replica_key_use`` and ``encryption.function_grants``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct, IConstruct

PENDING_WINDOW = cdk.Duration.days(30)
# What a role may ask KMS for through a service that encrypts under the key on its behalf.
READ_ACTIONS = ("kms:Decrypt", "kms:DescribeKey")
WRITE_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")
# The services reaching the key for the functions (their kms:ViaService values: via_service).
DYNAMODB = "dynamodb"
S3 = "s3"
SECRETS_MANAGER = "secretsmanager"


def key_description(prefix: str) -> str:
    return f"{prefix}: the table, buckets, secrets, queues and log groups (kmsKey)"


class Keys(Construct):
    """The multi-Region primary key, rotated yearly by KMS, aliased ``alias/<prefix>``."""

    def __init__(self, scope: Construct, id: str, *, prefix: str) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{prefix}",
            description=key_description(prefix),
            enable_key_rotation=True,
            multi_region=True,
            pending_window=PENDING_WINDOW,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )


class KeyReplica(Construct):
    """The key's replica in this stack's region (``AWS::KMS::ReplicaKey``): same id, same
    material, its own key policy: the account, plus ``statements`` (a service's, for this
    region: KMS does not copy the primary's policy). Rotation is the primary's and applies to
    its replicas."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        primary_key_arn: str,
        statements: Sequence[iam.PolicyStatement] = (),
    ) -> None:
        super().__init__(scope, id)
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    actions=["kms:*"],
                    principals=[iam.AccountRootPrincipal()],
                    resources=["*"],
                ),
                *statements,
            ]
        )
        self.replica = kms.CfnReplicaKey(
            self,
            "Key",
            primary_key_arn=primary_key_arn,
            key_policy=policy,
            description=key_description(prefix),
            pending_window_in_days=PENDING_WINDOW.to_days(),
        )
        self.replica.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        kms.CfnAlias(
            self, "Alias", alias_name=f"alias/{prefix}", target_key_id=self.replica.attr_key_id
        )
        self.key_arn = self.replica.attr_arn


def replica_key_arn(key: kms.IKey, region: str) -> str:
    """The ARN of ``key``'s replica in ``region``: a multi-Region key keeps its id there."""
    return cdk.Stack.of(key).format_arn(
        service="kms", region=region, resource="key", resource_name=key.key_id
    )


def via_service(scope: IConstruct, service: str, region: str | None = None) -> str:
    """The ``kms:ViaService`` value of ``service`` in ``region`` (``scope``'s stack's region by
    default): ``<service>.<region>.<url suffix>``, amazonaws.com or the partition's."""
    stack = cdk.Stack.of(scope)
    return f"{service}.{region or stack.region}.{stack.url_suffix}"


def grant_key_use(key: kms.IKey, role: iam.IRole, *, services: Iterable[str], write: bool) -> None:
    """Lets ``role`` use ``key`` only through ``services`` (DynamoDB, S3, Secrets Manager),
    reading, or reading and writing (new data keys). No services: any caller of the key's
    ciphertexts (the stream handler: Lambda's event source reads the stream with the function's
    role, and AWS documents no kms:ViaService value for DynamoDB Streams)."""
    via = sorted(via_service(role, service) for service in set(services))
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=list(WRITE_ACTIONS if write else READ_ACTIONS),
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": via}} if via else None,
        )
    )


def grant_replica_key_use(role: iam.IRole, key_arns: Mapping[str, str], *, service: str) -> None:
    """Lets ``role`` write through ``service`` under the key's replicas (``key_arns`` by
    region): Secrets Manager re-encrypts each replica of a secret under its region's key with
    the credentials of whoever puts a new version, the rotation function."""
    if not key_arns:
        return
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=list(WRITE_ACTIONS),
            resources=[key_arns[region] for region in sorted(key_arns)],
            conditions={
                "StringEquals": {
                    "kms:ViaService": [
                        via_service(role, service, region) for region in sorted(key_arns)
                    ]
                }
            },
        )
    )
