"""The ``kmsKey`` switch beyond the data unit: what else the key encrypts, what its key policy
lets AWS services do with it, and what each function's role may ask KMS for.

The keys stack makes the key (``keys.Keys``); the data unit encrypts the table and the uploads
and backups buckets with it (``Data.key``), the API unit the signing key. Here: the API's other
secrets (``encrypt_secret``), the queues (``encrypt_queue``), every log group of the primary
region's stacks (``EncryptLogGroups``), the key-policy statements for the services that encrypt
on their own account (``service_statements``: CloudWatch Logs, EventBridge) and the roles'
grants for the queues (``function_grants``; the API stack grants the uses of the table, buckets
and signing key: ``stacks.KEY_USES``, ``keys.grant_key_use``). cdk/README.md ("Encryption:
kmsKey") says what stays off the key and why.

Everything added to the key's policy from here is a literal (region, account, names): the key's
stack comes before the stacks using it, so its policy can name none of their resources.
"""

from __future__ import annotations

import fnmatch

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import IConstruct

from chalicelib.eventroutes import ROUTES
from gatehouse_infra import runtime
from gatehouse_infra.keys import via_service
from gatehouse_infra.runtime import Grant

# What CloudWatch Logs asks of a log group's key (its user guide's key policy), on the condition
# that the encryption context names one of our log groups.
LOGS_ACTIONS = (
    "kms:Encrypt*",
    "kms:Decrypt*",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:Describe*",
)
LOGS_CONTEXT = "kms:EncryptionContext:aws:logs:arn"
# What SQS has a producer ask KMS for (a data key, and its decryption while it is reused), and a
# consumer (the decryption).
SEND_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
DECRYPT_ACTIONS = ("kms:Decrypt",)
VIA_SERVICE = "kms:ViaService"


def log_group_patterns(environment: str) -> tuple[str, ...]:
    """The names a log group under the key may have (the key policy's condition for CloudWatch
    Logs): ours, ``/gatehouse/<env>/...`` (the functions', runtime.log_group_name), and those
    CloudFormation names after their stack, ``gatehouse-<env>-<stack>-...`` (the groups of CDK's
    provider functions). A group named otherwise fails synthesis (``EncryptLogGroups``): name it
    under ``/gatehouse/<env>/``, or add its pattern here."""
    return (f"/{runtime.PROJECT}/{environment}/*", f"{runtime.prefix(environment)}-*")


def rule_arns(stack: cdk.Stack, environment: str) -> list[str]:
    """The ARNs of the bus's rules (events.py names each rule after its worker's queue)."""
    bus = runtime.event_bus_name(environment)
    return [
        stack.format_arn(
            service="events",
            resource="rule",
            resource_name=f"{bus}/{runtime.queue_name(environment, route.worker)}",
        )
        for route in ROUTES
    ]


def service_statements(stack: cdk.Stack, *environments: str) -> list[iam.PolicyStatement]:
    """The key-policy statements for the services that use the key on their own account, each
        limited to this deployment's resources in ``stack``'s region and account: CloudWatch Logs
        (the functions' and the providers' log groups) and EventBridge (the rules' deliveries to the
        queues and to their dead-letter queues), for each of ``environments``. A replica of the key
    needs them too, in its region, for the environment a region-outage deploy there uses."""
    account = stack.account
    return [
        iam.PolicyStatement(
            sid="CloudWatchLogs",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=list(LOGS_ACTIONS),
            resources=["*"],
            conditions={
                "ArnLike": {
                    LOGS_CONTEXT: [
                        stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name=pattern,
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                        for environment in environments
                        for pattern in log_group_patterns(environment)
                    ]
                }
            },
        ),
        iam.PolicyStatement(
            sid="EventBridgeToQueues",
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=list(SEND_ACTIONS),
            resources=["*"],
            conditions={
                "StringEquals": {"aws:SourceAccount": account},
                "ArnEquals": {
                    "aws:SourceArn": [
                        arn for environment in environments for arn in rule_arns(stack, environment)
                    ]
                },
            },
        ),
    ]


def allow_services(key: kms.IKey, *, environment: str) -> None:
    """Adds ``service_statements`` to ``key``'s policy (in the key's own stack)."""
    for statement in service_statements(cdk.Stack.of(key), environment):
        if not key.add_to_resource_policy(statement).statement_added:
            cdk.Annotations.of(key).add_warning_v2(
                "gatehouse:key-policy",
                f"The key's policy is not managed here: it needs statement {statement.sid} "
                "(cdk/README.md, Encryption: kmsKey).",
            )


def function_grants(key: kms.IKey, scope: IConstruct) -> dict[str, list[Grant]]:
    """What each function's role may ask KMS for on account of the queues, by the function's
    logical id, through SQS alone (``kms:ViaService``): the workers read their queue (decrypt);
    the stream handler's event source mapping sends a failed batch's coordinates to the stream's
    dead-letter queue with the function's role (a data key, and its decryption while SQS reuses
    it). The uses of the key for the table, the buckets and the signing key are granted by the
    API stack (``stacks.KEY_USES``)."""
    via_sqs = {"StringEquals": {VIA_SERVICE: [via_service(scope, "sqs")]}}
    key_arn = key.key_arn
    return {
        runtime.STREAM_HANDLER.function: [
            Grant("StreamFailuresKey", SEND_ACTIONS, (key_arn,), via_sqs)
        ],
        **{
            handler.function: [Grant("QueueKey", DECRYPT_ACTIONS, (key_arn,), via_sqs)]
            for handler in runtime.WORKER_HANDLERS.values()
        },
    }


def encrypt_queue(queue: sqs.Queue, key: kms.IKey) -> None:
    """Puts ``queue`` under ``key`` on its CloudFormation resource. Told of the key, CDK's queue
    would drop the rule's ``aws:SourceArn`` condition from the queue policy that lets
    EventBridge send, and grant EventBridge every use of the key with no condition
    (aws-events-targets' SqsQueue): ``service_statements`` grants it instead."""
    queue_resource = queue.node.default_child
    if not isinstance(queue_resource, sqs.CfnQueue):
        raise TypeError("a queue's resource is not a CfnQueue")
    queue_resource.sqs_managed_sse_enabled = None
    queue_resource.kms_master_key_id = key.key_arn


def encrypt_secret(secret: secretsmanager.Secret, key: kms.IKey) -> None:
    """Puts ``secret`` under ``key`` on its CloudFormation resource: told of the key, CDK's secret
    would add statements for every principal of the account (through Secrets Manager) to the
    key's policy, which the account's own statement already covers. Read at deploy time only
    (CloudFormation's dynamic reference), by the deploying role."""
    secret_resource = secret.node.default_child
    if not isinstance(secret_resource, secretsmanager.CfnSecret):
        raise TypeError("a secret's resource is not a CfnSecret")
    secret_resource.kms_key_id = key.key_arn


@jsii.implements(cdk.IAspect)
class EncryptLogGroups:
    """Puts every log group of a stack in the key's region under the key: the functions', the
    providers' (``stacks.ProviderLogGroups`` does those it makes itself) and any other, such as
    API Gateway's access logs. A group whose name the key policy does not cover fails synthesis
    (``log_group_patterns``)."""

    def __init__(self, key: kms.IKey, environment: str) -> None:
        self._key = key
        self._patterns = log_group_patterns(environment)

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, logs.CfnLogGroup) or node.kms_key_id is not None:
            return
        # Unnamed, CloudFormation names it "<stack name>-<logical id>-<suffix>".
        name = node.log_group_name or f"{cdk.Stack.of(node).stack_name}-"
        if not cdk.Token.is_unresolved(name) and not any(
            fnmatch.fnmatchcase(name, pattern) for pattern in self._patterns
        ):
            raise ValueError(
                f"log group {name} ({node.node.path}): with kmsKey, CloudWatch Logs may use the "
                f"key only for log groups named {' or '.join(self._patterns)}; name it so, or "
                "add its pattern to encryption.log_group_patterns"
            )
        node.kms_key_id = self._key.key_arn
