"""Observability: the seed's alarms, a dashboard, a monthly budget; notifications on SNS.

CloudFront publishes its metrics in us-east-1 only and an alarm must sit in its metric's region,
so the CloudFront alarm lives in ``EdgeMonitoringStack`` there, with a topic of its own.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from gatehouse_infra.api import STAGE, ApiStack
from gatehouse_infra.config import DeployConfig
from gatehouse_infra.data import DataStack
from gatehouse_infra.nag import acknowledge

FIVE_MINUTES = cdk.Duration.minutes(5)
LAMBDA_ERROR_RATE_PERCENT = 1
API_5XX_PER_FIVE_MINUTES = 10
CLOUDFRONT_5XX_RATE_PERCENT = 1
CLOUDFRONT_REGION = "us-east-1"


def alarm_topic(scope: Construct, config: DeployConfig) -> sns.Topic:
    topic = sns.Topic(scope, "Alarms", display_name=f"{config.prefix} alarms", enforce_ssl=True)
    if config.alarm_email:
        topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
    acknowledge(
        topic,
        {
            "SNS2": "Alarm notifications carry metric names only; CloudWatch and Budgets cannot "
            "publish to the AWS-managed SNS key, and a customer key costs $1/month.",
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


def cloudfront_5xx_rate(distribution_id: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/CloudFront",
        metric_name="5xxErrorRate",
        dimensions_map={"DistributionId": distribution_id, "Region": "Global"},
        statistic="Average",
        period=FIVE_MINUTES,
        region=CLOUDFRONT_REGION,
    )


class MonitoringStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        data: DataStack,
        api: ApiStack,
        distribution_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        topic = alarm_topic(self, config)
        action = actions.SnsAction(topic)
        alarms: list[cloudwatch.Alarm] = []
        lambda_widgets: list[cloudwatch.IWidget] = []
        for name, function_name in api.function_names.items():
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
                dimensions_map={"ApiName": f"{config.prefix}-api", "Stage": STAGE},
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
                    dimensions_map={"TableName": data.table.table_name},
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
        for alarm in alarms:
            alarm.add_alarm_action(action)
        cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=config.prefix,
            widgets=[
                lambda_widgets,
                [
                    cloudwatch.GraphWidget(title="API requests", left=list(api_metric.values())),
                    cloudwatch.GraphWidget(title="DynamoDB throttles", left=[throttles]),
                    cloudwatch.GraphWidget(
                        title="CloudFront 5xx rate (%)",
                        left=[cloudfront_5xx_rate(distribution_id)],
                    ),
                ],
                [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=24)],
            ],
        )
        self._budget(config, topic)

    def _budget(self, config: DeployConfig, topic: sns.Topic) -> None:
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                resources=[topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        subscriber = budgets.CfnBudget.SubscriberProperty(
            subscription_type="SNS", address=topic.topic_arn
        )
        budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{config.prefix}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(
                    amount=config.monthly_budget_usd, unit="USD"
                ),
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
                for key, value in config.tags.items()
            ],
        )


class EdgeMonitoringStack(cdk.Stack):
    """us-east-1: the CloudFront 5xx-rate alarm, beside the metric it watches."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        distribution_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        topic = alarm_topic(self, config)
        alarm = above(
            cloudfront_5xx_rate(distribution_id),
            self,
            "CloudFront5xxRate",
            "More than 1 % of CloudFront responses were 5xx",
            CLOUDFRONT_5XX_RATE_PERCENT,
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
