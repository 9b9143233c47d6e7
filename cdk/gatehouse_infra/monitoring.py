"""The monitoring unit: the seed's alarms, a dashboard, a monthly budget; notifications on SNS.

CloudFront publishes its metrics in us-east-1 only and an alarm must sit in its metric's region,
so the CloudFront alarm is a construct of its own (``EdgeMonitoring``), deployed there with a
topic of its own. Cost Explorer's resources exist in us-east-1 only: cost anomaly detection is
there too, on that topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_ce as ce
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from chalicelib import metrics as business
from gatehouse_infra.nag import acknowledge
from gatehouse_infra.runtime import STAGE

FIVE_MINUTES = cdk.Duration.minutes(5)
LAMBDA_ERROR_RATE_PERCENT = 1
API_5XX_PER_FIVE_MINUTES = 10
CLOUDFRONT_5XX_RATE_PERCENT = 1
CLOUDFRONT_REGION = "us-east-1"
# A message older than this in a work queue: the worker is failing, throttled or not polling.
OLDEST_MESSAGE_SECONDS = 300
# Cost anomaly detection watches the costs carrying both these cost-allocation tags with this
# deployment's values (each activated once in Billing): Project alone would make every
# environment's monitor in an account alert on all of them. It mails an anomaly whose total
# impact reaches this many dollars.
COST_TAGS = ("Project", "Environment")
COST_ANOMALY_IMPACT_USD = 10


def queue_metric(queue_name: str, metric_name: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/SQS",
        metric_name=metric_name,
        dimensions_map={"QueueName": queue_name},
        statistic="Maximum",
        period=FIVE_MINUTES,
    )


def allow_publish(
    topic: sns.Topic, sid: str, service: str, conditions: Mapping[str, Any] | None = None
) -> None:
    """Lets an AWS service publish to ``topic`` on behalf of this account only."""
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=["sns:Publish"],
            principals=[iam.ServicePrincipal(f"{service}.amazonaws.com")],
            resources=[topic.topic_arn],
            conditions={
                "StringEquals": {"aws:SourceAccount": cdk.Stack.of(topic).account},
                **(conditions or {}),
            },
        )
    )


def alarm_topic(scope: Construct, prefix: str, alarm_email: str | None) -> sns.Topic:
    topic = sns.Topic(scope, "Alarms", display_name=f"{prefix} alarms", enforce_ssl=True)
    if alarm_email:
        topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
    # A topic policy replaces SNS's default one, which let the account's services publish: the
    # alarms of this account, in this topic's region, must be allowed by name.
    stack = cdk.Stack.of(scope)
    alarms = stack.format_arn(
        service="cloudwatch",
        resource="alarm",
        resource_name="*",
        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
    )
    allow_publish(topic, "CloudWatchAlarms", "cloudwatch", {"ArnLike": {"aws:SourceArn": alarms}})
    acknowledge(
        topic,
        {
            "SNS2": "Alarm notifications carry metric names only; CloudWatch and Budgets cannot "
            "publish to the AWS-managed SNS key; kmsKey's key stays off on purpose, so that an "
            "alarm still reaches its subscribers when the key is disabled or its policy broken.",
        },
    )
    return topic


def above(
    metric: cloudwatch.Metric | cloudwatch.MathExpression,
    scope: Construct,
    id: str,
    description: str,
    threshold: float,
) -> cloudwatch.Alarm:
    """An alarm when one 5-minute period is above ``threshold``; no data is not an alarm."""
    return metric.create_alarm(
        scope,
        id,
        alarm_description=description,
        threshold=threshold,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def business_metrics(environment: str) -> cloudwatch.GraphWidget:
    """The app's counts (chalicelib/metrics.py): activity on the left, failures and security
    signals on the right, 5-minute sums."""

    def metric(name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=business.NAMESPACE,
            metric_name=name,
            dimensions_map={business.DIMENSION: environment},
            statistic="Sum",
            period=FIVE_MINUTES,
        )

    return cloudwatch.GraphWidget(
        title="Sign-ups, logins and security signals",
        left=[metric(name) for name in business.ACTIVITY],
        right=[metric(name) for name in business.SIGNALS],
        width=24,
    )


def cloudfront_5xx_rate(distribution_id: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/CloudFront",
        metric_name="5xxErrorRate",
        dimensions_map={"DistributionId": distribution_id, "Region": "Global"},
        statistic="Average",
        period=FIVE_MINUTES,
        region=CLOUDFRONT_REGION,
    )


class Monitoring(Construct):
    """Alarms on the functions' error rates, the API's 5XX and the table's throttling, all to
    one topic; the dashboard; the monthly budget."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        environment: str,
        tags: Mapping[str, str],
        alarm_email: str | None,
        monthly_budget_usd: int,
        function_names: Mapping[str, str],
        job_function_names: Mapping[str, str],
        queue_names: Mapping[str, str],
        dead_letter_names: list[str],
        api_name: str,
        table: dynamodb.ITable,
        distribution: cloudfront.IDistribution,
    ) -> None:
        super().__init__(scope, id)
        topic = alarm_topic(self, prefix, alarm_email)
        action = actions.SnsAction(topic)
        alarms: list[cloudwatch.Alarm] = []
        lambda_widgets: list[cloudwatch.IWidget] = []
        for name, function_name in function_names.items():
            errors, invocations = (
                cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name=metric,
                    dimensions_map={"FunctionName": function_name},
                    statistic="Sum",
                    period=FIVE_MINUTES,
                )
                for metric in ("Errors", "Invocations")
            )
            rate = cloudwatch.MathExpression(
                expression="IF(invocations > 0, 100 * errors / invocations, 0)",
                using_metrics={"errors": errors, "invocations": invocations},
                label=f"{name} error rate (%)",
                period=FIVE_MINUTES,
            )
            alarms.append(
                above(
                    rate,
                    self,
                    f"{name}ErrorRate",
                    f"{name}: more than 1 % of invocations failed",
                    LAMBDA_ERROR_RATE_PERCENT,
                )
            )
            lambda_widgets.append(
                cloudwatch.GraphWidget(title=f"{name}", left=[invocations, errors], right=[rate])
            )
        api_metric = {
            metric: cloudwatch.Metric(
                namespace="AWS/ApiGateway",
                metric_name=metric,
                dimensions_map={"ApiName": api_name, "Stage": STAGE},
                statistic="Sum",
                period=FIVE_MINUTES,
            )
            for metric in ("Count", "4XXError", "5XXError")
        }
        alarms.append(
            above(
                api_metric["5XXError"],
                self,
                "Api5xx",
                "API Gateway answered 5XX more than 10 times in 5 minutes",
                API_5XX_PER_FIVE_MINUTES,
            )
        )
        throttles = cloudwatch.MathExpression(
            expression="reads + writes",
            using_metrics={
                key: cloudwatch.Metric(
                    namespace="AWS/DynamoDB",
                    metric_name=metric,
                    dimensions_map={"TableName": table.table_name},
                    statistic="Sum",
                    period=FIVE_MINUTES,
                )
                for key, metric in (
                    ("reads", "ReadThrottleEvents"),
                    ("writes", "WriteThrottleEvents"),
                )
            },
            label="DynamoDB throttled requests",
            period=FIVE_MINUTES,
        )
        alarms.append(above(throttles, self, "TableThrottles", "DynamoDB throttled a request", 0))
        alarms.extend(self._events(prefix, job_function_names, queue_names, dead_letter_names))
        for alarm in alarms:
            alarm.add_alarm_action(action)
        cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=prefix,
            widgets=[
                lambda_widgets,
                [
                    cloudwatch.GraphWidget(title="API requests", left=list(api_metric.values())),
                    cloudwatch.GraphWidget(title="DynamoDB throttles", left=[throttles]),
                    cloudwatch.GraphWidget(
                        title="CloudFront 5xx rate (%)",
                        left=[cloudfront_5xx_rate(distribution.distribution_id)],
                    ),
                ],
                [business_metrics(environment)],
                [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=24)],
            ],
        )
        self._budget(topic, prefix, monthly_budget_usd, tags)

    def _events(
        self,
        prefix: str,
        job_function_names: Mapping[str, str],
        queue_names: Mapping[str, str],
        dead_letter_names: list[str],
    ) -> list[cloudwatch.Alarm]:
        """Any dead letter; a work queue whose oldest message waits 5 minutes; a failed job."""
        alarms = [
            above(
                queue_metric(name, "ApproximateNumberOfMessagesVisible"),
                self,
                f"DeadLetters{_title(name, prefix)}",
                f"{name} holds a message that was not processed",
                0,
            )
            for name in dead_letter_names
        ]
        alarms.extend(
            above(
                queue_metric(name, "ApproximateAgeOfOldestMessage"),
                self,
                f"OldestMessage{_title(name, prefix)}",
                f"{name}: a message has waited more than {OLDEST_MESSAGE_SECONDS} s",
                OLDEST_MESSAGE_SECONDS,
            )
            for name in queue_names.values()
        )
        alarms.extend(
            above(
                cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name="Errors",
                    dimensions_map={"FunctionName": function_name},
                    statistic="Sum",
                    period=FIVE_MINUTES,
                ),
                self,
                f"{name}Errors",
                f"{name} failed",
                0,
            )
            for name, function_name in job_function_names.items()
        )
        return alarms

    def _budget(
        self, topic: sns.Topic, prefix: str, amount_usd: int, tags: Mapping[str, str]
    ) -> None:
        allow_publish(topic, "Budgets", "budgets")
        subscriber = budgets.CfnBudget.SubscriberProperty(
            subscription_type="SNS", address=topic.topic_arn
        )
        budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{prefix}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=amount_usd, unit="USD"),
            ),
            notifications_with_subscribers=[
                budgets.CfnBudget.NotificationWithSubscribersProperty(
                    notification=budgets.CfnBudget.NotificationProperty(
                        notification_type=kind,
                        comparison_operator="GREATER_THAN",
                        threshold=threshold,
                        threshold_type="PERCENTAGE",
                    ),
                    subscribers=[subscriber],
                )
                for kind, threshold in (("ACTUAL", 80), ("FORECASTED", 100))
            ],
            # Not reached by cdk.Tags (the budget's tags are a property of their own).
            resource_tags=[
                budgets.CfnBudget.ResourceTagProperty(key=key, value=value)
                for key, value in tags.items()
            ],
        )


def _title(queue_name: str, prefix: str) -> str:
    """``gatehouse-production-notify-dlq`` -> ``NotifyDlq``: the part after the prefix."""
    parts = queue_name.removeprefix(f"{prefix}-").split("-")
    return "".join(part.capitalize() for part in parts)


class EdgeMonitoring(Construct):
    """us-east-1: the CloudFront 5xx-rate alarm, beside the metric it watches, and its topic;
    with an alarm address, cost anomaly detection on the same topic."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        tags: Mapping[str, str],
        alarm_email: str | None,
        distribution: cloudfront.IDistribution,
    ) -> None:
        super().__init__(scope, id)
        topic = alarm_topic(self, prefix, alarm_email)
        alarm = above(
            cloudfront_5xx_rate(distribution.distribution_id),
            self,
            "CloudFront5xxRate",
            "More than 1 % of CloudFront responses were 5xx",
            CLOUDFRONT_5XX_RATE_PERCENT,
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        if alarm_email:
            self._cost_anomalies(topic, prefix, tags)

    def _cost_anomalies(self, topic: sns.Topic, prefix: str, tags: Mapping[str, str]) -> None:
        """A custom monitor of the costs tagged with this deployment's ``Project`` and
        ``Environment`` (COST_TAGS; an account has room for one
        AWS-services monitor, which AWS creates itself in new accounts), and a subscription
        publishing each anomaly of $10 or more to the topic as it is found."""
        allow_publish(topic, "CostAnomalies", "costalerts")
        # Not reached by cdk.Tags (the tags are a property of their own, as the budget's).
        ordered = sorted(tags.items())
        monitor = ce.CfnAnomalyMonitor(
            self,
            "CostAnomalyMonitor",
            monitor_name=f"{prefix}-costs",
            monitor_type="CUSTOM",
            monitor_specification=json.dumps(
                {
                    "And": [
                        {"Tags": {"Key": key, "Values": [tags[key]], "MatchOptions": ["EQUALS"]}}
                        for key in COST_TAGS
                    ]
                }
            ),
            resource_tags=[
                ce.CfnAnomalyMonitor.ResourceTagProperty(key=key, value=value)
                for key, value in ordered
            ],
        )
        ce.CfnAnomalySubscription(
            self,
            "CostAnomalySubscription",
            subscription_name=f"{prefix}-costs",
            monitor_arn_list=[monitor.attr_monitor_arn],
            # SNS subscribers are told at once; e-mail ones only in daily or weekly summaries.
            frequency="IMMEDIATE",
            subscribers=[
                ce.CfnAnomalySubscription.SubscriberProperty(type="SNS", address=topic.topic_arn)
            ],
            threshold_expression=json.dumps(
                {
                    "Dimensions": {
                        "Key": "ANOMALY_TOTAL_IMPACT_ABSOLUTE",
                        "MatchOptions": ["GREATER_THAN_OR_EQUAL"],
                        "Values": [str(COST_ANOMALY_IMPACT_USD)],
                    }
                }
            ),
            resource_tags=[
                ce.CfnAnomalySubscription.ResourceTagProperty(key=key, value=value)
                for key, value in ordered
            ],
        )
