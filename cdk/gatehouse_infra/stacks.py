"""Puts the stacks together from the context: regions, order, tags."""

from __future__ import annotations

import os
from pathlib import Path

import aws_cdk as cdk
import jsii
from constructs import IConstruct

from gatehouse_infra.api import ApiStack
from gatehouse_infra.config import DeployConfig
from gatehouse_infra.data import DataStack
from gatehouse_infra.edge import EdgeStack
from gatehouse_infra.monitoring import EdgeMonitoringStack, MonitoringStack
from gatehouse_infra.site import SiteStack


def build(app: cdk.App, *, base_dir: Path) -> list[cdk.Stack]:
    config = DeployConfig.from_context(app.node)
    # Synthesis needs no account: with none configured the templates are account-agnostic.
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    primary = cdk.Environment(account=account, region=config.primary_region)
    edge_env = cdk.Environment(account=account, region=config.certificate_region)
    name = config.prefix

    def stack_id(part: str) -> str:
        return f"{name}-{part}"

    edge = (
        EdgeStack(app, stack_id("edge"), config=config, env=edge_env, cross_region_references=True)
        if config.needs_edge_stack
        else None
    )
    data = DataStack(app, stack_id("data"), config=config, env=primary)
    api = ApiStack(app, stack_id("api"), config=config, data=data, env=primary)
    site = SiteStack(
        app,
        stack_id("site"),
        config=config,
        data=data,
        api=api,
        certificate=edge.site_certificate if edge else None,
        web_acl_arn=edge.web_acl_arn if edge else None,
        site_dir=(base_dir / config.site_dir).resolve(),
        env=primary,
        cross_region_references=True,
    )
    monitoring = MonitoringStack(
        app,
        stack_id("monitoring"),
        config=config,
        data=data,
        api=api,
        distribution_id=site.distribution.distribution_id,
        env=primary,
    )
    edge_monitoring = EdgeMonitoringStack(
        app,
        stack_id("edge-monitoring"),
        config=config,
        distribution_id=site.distribution.distribution_id,
        env=edge_env,
        cross_region_references=True,
    )
    built = (edge, data, api, site, monitoring, edge_monitoring)
    stacks: list[cdk.Stack] = [stack for stack in built if stack is not None]
    for stack in stacks:
        for key, value in config.tags.items():
            cdk.Tags.of(stack).add(key, value)
        cdk.Aspects.of(stack).add(TagProviderResources(config.tags))
    return stacks


@jsii.implements(cdk.IAspect)
class TagProviderResources:
    """Tags the roles and functions of CDK's custom-resource providers, which cdk.Tags skips:
    they are plain CfnResources, not the taggable L1 classes."""

    TYPES = frozenset({"AWS::IAM::Role", "AWS::Lambda::Function"})

    def __init__(self, tags: dict[str, str]) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]

    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type in self.TYPES
            and not cdk.TagManager.is_taggable(node)
        ):
            node.add_property_override("Tags", self._tags)
