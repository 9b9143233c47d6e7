"""The WAF switches (cdk/README.md, "WAF"): off, the ``plain`` assembly has no web ACL and the
API accepts direct calls; on, with every WAF value set, the edge web ACL's rules, the regional
web ACL on the API's stage (CloudFront's edge key first; api.<domain>'s rules; the rest
blocked), with and without the API domain, and the API's refusal of requests that skipped
CloudFront."""

from __future__ import annotations

import json
import sys
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from tests.conftest import ROOT
from tests.test_cdk import DOMAIN, Assembly, cfn_lint_errors, plain, site, synthesize  # noqa: F401

sys.path.insert(0, str(ROOT / "cdk"))
from gatehouse_infra import runtime
from gatehouse_infra.edge import PRIORITIES, TOO_MANY, Edge, WafSettings

from chalicelib.settings import EDGE_HEADER
from chalicelib.web.http import EDGE_REQUIRED_MESSAGE

WAF = {
    **DOMAIN,
    "enableWaf": True,
    "wafRateLimit": 1000,
    "wafAuthRateLimit": 200,
    "wafGeoBlock": "kp,RU",
    "wafAllowList": "192.0.2.0/24,2001:db8::/48",
    "wafBotControl": True,
}
# WAF without a domain (allowed: CloudFront's own name serves the site).
WAF_ALONE = {"enableWaf": True}
# The edge key, as CloudFront's origin header and the functions' EDGE_SECRET read it: resolved by
# CloudFormation at deploy, so the value is in no template.
EDGE_KEY = "{{resolve:secretsmanager:gatehouse/production/edge-key:SecretString:::}}"
MANAGED = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)
EDGE_PRIORITIES = {
    "geo-block": 10,
    "admin-allow-list": 20,
    "rate-limit": 30,
    "auth-rate-limit": 40,
    "AWSManagedRulesCommonRuleSet": 50,
    "AWSManagedRulesKnownBadInputsRuleSet": 60,
    "AWSManagedRulesAmazonIpReputationList": 70,
    "AWSManagedRulesBotControlRuleSet": 80,
}
TRANSFORMS = [
    {"Priority": index, "Type": kind}
    for index, kind in enumerate(("URL_DECODE", "NORMALIZE_PATH", "LOWERCASE"))
]
# The functions that answer requests from outside: the REST API's and the WebSocket $connect's.
FRONT_FUNCTIONS = ("APIHandler", "Bearer", "WebsocketConnect")


@pytest.fixture(scope="module")
def waf(tmp_path_factory: pytest.TempPathFactory, site: Any) -> Assembly:  # noqa: F811
    return synthesize(tmp_path_factory.mktemp("waf"), site, WAF)


@pytest.fixture(scope="module")
def waf_alone(tmp_path_factory: pytest.TempPathFactory, site: Any) -> Assembly:  # noqa: F811
    return synthesize(tmp_path_factory.mktemp("waf-alone"), site, WAF_ALONE)


def rules(acl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["Name"]: rule for rule in acl["Rules"]}


def path_match(prefix: str) -> dict[str, Any]:
    return {
        "ByteMatchStatement": {
            "FieldToMatch": {"UriPath": {}},
            "PositionalConstraint": "STARTS_WITH",
            "SearchString": prefix,
            "TextTransformations": TRANSFORMS,
        }
    }


def assert_blocks(acl: dict[str, Any], name: str, status: int, message: str) -> None:
    """The rule blocks with ``status`` and a ``{"message"}`` JSON body, like the API's errors."""
    rule = rules(acl)[name]
    assert rule["Action"] == {
        "Block": {"CustomResponse": {"ResponseCode": status, "CustomResponseBodyKey": name}}
    }
    body = acl["CustomResponseBodies"][name]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert json.loads(body["Content"]) == {"message": message}


def ip_sets(assembly: Assembly, stack: str) -> dict[str, dict[str, Any]]:
    """The IP sets of ``stack`` by address family, with their logical ids."""
    return {
        resource["Properties"]["IPAddressVersion"]: {"Id": name, **resource["Properties"]}
        for name, resource in assembly.resources(stack, "AWS::WAFv2::IPSet").items()
    }


def function_variables(assembly: Assembly, name: str) -> dict[str, Any]:
    functions = assembly.resources("api", "AWS::Serverless::Function")
    variables: dict[str, Any] = functions[name]["Properties"]["Environment"]["Variables"]
    return variables


class TestOff:
    def test_no_web_acl_no_ip_set_and_no_edge_stack(self, plain: Assembly) -> None:  # noqa: F811
        assert "gatehouse-production-edge.template.json" not in plain.stacks()
        for name in plain.stacks():
            stack = name.removeprefix("gatehouse-production-").removesuffix(".template.json")
            template = plain.template(stack)
            kinds = {resource["Type"] for resource in template["Resources"].values()}
            assert not {kind for kind in kinds if kind.startswith("AWS::WAFv2::")}, name

    def test_the_api_accepts_calls_that_skip_cloudfront(self, plain: Assembly) -> None:  # noqa: F811
        for name in FRONT_FUNCTIONS:
            variables = function_variables(plain, name)
            assert "EDGE_REQUIRED" not in variables
            assert "EDGE_EXEMPT_DOMAIN" not in variables


class TestEdgeWebAcl:
    def test_every_rule_at_its_fixed_priority_in_front_of_cloudfront(self, waf: Assembly) -> None:
        acl = waf.one("edge", "AWS::WAFv2::WebACL")
        assert acl["Scope"] == "CLOUDFRONT"
        assert acl["DefaultAction"] == {"Allow": {}}
        found = {rule["Name"]: rule["Priority"] for rule in acl["Rules"]}
        assert found == EDGE_PRIORITIES
        assert [rule["Name"] for rule in acl["Rules"]] == list(EDGE_PRIORITIES)
        for rule in acl["Rules"]:
            assert rule["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True

    def test_the_site_uses_it(self, waf: Assembly) -> None:
        [distribution] = waf.resources("site", "AWS::CloudFront::Distribution").values()
        assert "WebACLId" in distribution["Properties"]["DistributionConfig"]

    def test_geo_block_blocks_the_countries(self, waf: Assembly) -> None:
        rule = rules(waf.one("edge", "AWS::WAFv2::WebACL"))["geo-block"]
        assert rule["Statement"] == {"GeoMatchStatement": {"CountryCodes": ["KP", "RU"]}}
        assert_blocks(
            waf.one("edge", "AWS::WAFv2::WebACL"),
            "geo-block",
            403,
            "Forbidden: the service is not offered in your country",
        )

    def test_a_site_wide_rate_limit_per_address_on_every_path(self, waf: Assembly) -> None:
        rule = rules(waf.one("edge", "AWS::WAFv2::WebACL"))["rate-limit"]
        assert rule["Statement"] == {
            "RateBasedStatement": {
                "AggregateKeyType": "IP",
                "Limit": 1000,
                "EvaluationWindowSec": 300,
            }
        }
        assert_blocks(waf.one("edge", "AWS::WAFv2::WebACL"), "rate-limit", 429, TOO_MANY)

    def test_the_auth_routes_keep_their_own_lower_limit(self, waf: Assembly) -> None:
        rule = rules(waf.one("edge", "AWS::WAFv2::WebACL"))["auth-rate-limit"]
        statement = rule["Statement"]["RateBasedStatement"]
        assert (statement["Limit"], statement["EvaluationWindowSec"]) == (200, 300)
        assert statement["ScopeDownStatement"] == path_match("/api/auth/")
        assert_blocks(waf.one("edge", "AWS::WAFv2::WebACL"), "auth-rate-limit", 429, TOO_MANY)

    def test_only_the_allow_list_reaches_the_admin_routes(self, waf: Assembly) -> None:
        sets = ip_sets(waf, "edge")
        assert set(sets) == {"IPV4", "IPV6"}
        assert sets["IPV4"]["Addresses"] == ["192.0.2.0/24"]
        assert sets["IPV6"]["Addresses"] == ["2001:db8::/48"]
        assert {s["Scope"] for s in sets.values()} == {"CLOUDFRONT"}
        assert sets["IPV4"]["Name"] == "gatehouse-production-edge-admin-ipv4"
        rule = rules(waf.one("edge", "AWS::WAFv2::WebACL"))["admin-allow-list"]
        assert_blocks(
            waf.one("edge", "AWS::WAFv2::WebACL"),
            "admin-allow-list",
            403,
            "Forbidden: the admin routes answer listed addresses only",
        )
        admin, outside = rule["Statement"]["AndStatement"]["Statements"]
        assert admin == {
            "OrStatement": {"Statements": [path_match("/api/users"), path_match("/api/admin")]}
        }
        allowed = outside["NotStatement"]["Statement"]["OrStatement"]["Statements"]
        assert allowed == [
            {"IPSetReferenceStatement": {"Arn": {"Fn::GetAtt": [sets[family]["Id"], "Arn"]}}}
            for family in ("IPV4", "IPV6")
        ]

    def test_bot_control_at_the_common_level(self, waf: Assembly) -> None:
        rule = rules(waf.one("edge", "AWS::WAFv2::WebACL"))["AWSManagedRulesBotControlRuleSet"]
        assert rule["OverrideAction"] == {"None": {}}
        group = rule["Statement"]["ManagedRuleGroupStatement"]
        assert (group["VendorName"], group["Name"]) == ("AWS", "AWSManagedRulesBotControlRuleSet")
        assert group["ManagedRuleGroupConfigs"] == [
            {"AWSManagedRulesBotControlRuleSet": {"InspectionLevel": "COMMON"}}
        ]

    def test_the_managed_groups_stay(self, waf: Assembly) -> None:
        found = rules(waf.one("edge", "AWS::WAFv2::WebACL"))
        for group in MANAGED:
            statement = found[group]["Statement"]["ManagedRuleGroupStatement"]
            assert statement["Name"] == group
        common = found["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
        assert common["RuleActionOverrides"] == [
            {"ActionToUse": {"Count": {}}, "Name": "SizeRestrictions_BODY"}
        ]


def assert_edge_key_first(acl: dict[str, Any]) -> None:
    """The first rule lets through what carries CloudFront's edge key, unsampled."""
    first = acl["Rules"][0]
    assert (first["Name"], first["Priority"], first["Action"]) == ("edge-key", 0, {"Allow": {}})
    assert first["Statement"] == {
        "ByteMatchStatement": {
            "FieldToMatch": {"SingleHeader": {"Name": EDGE_HEADER}},
            "PositionalConstraint": "EXACTLY",
            "SearchString": EDGE_KEY,
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
        }
    }
    # A sample would show the key (and, with apiKeys, the site's API key).
    assert first["VisibilityConfig"]["SampledRequestsEnabled"] is False
    assert first["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True


def assert_blocks_the_rest(acl: dict[str, Any]) -> None:
    """What no rule lets through is blocked, with the app's own EDGE_REQUIRED answer."""
    assert acl["DefaultAction"] == {
        "Block": {"CustomResponse": {"ResponseCode": 403, "CustomResponseBodyKey": "edge-required"}}
    }
    body = acl["CustomResponseBodies"]["edge-required"]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert json.loads(body["Content"]) == {"message": EDGE_REQUIRED_MESSAGE}


def assert_guards_the_stage(assembly: Assembly) -> None:
    [association] = assembly.resources("api", "AWS::WAFv2::WebACLAssociation").values()
    arn = association["Properties"]["ResourceArn"]["Fn::Join"][1]
    assert {"Ref": "RestAPI"} in arn
    assert arn[-1] == "/stages/api"
    assert "RestAPIapiStage" in association["DependsOn"]
    [acl_id] = assembly.resources("api", "AWS::WAFv2::WebACL")
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}


def assert_after_the_edge_key(assembly: Assembly) -> None:
    """The reference names the secret: the web ACL waits for it explicitly."""
    [acl] = assembly.resources("api", "AWS::WAFv2::WebACL").values()
    [secret_id] = [
        name
        for name, resource in assembly.resources("api", "AWS::SecretsManager::Secret").items()
        if resource["Properties"]["Name"] == "gatehouse/production/edge-key"
    ]
    assert secret_id in acl["DependsOn"]


class TestApiStageWebAclAlone:
    """enableWaf without customApiDomain: only CloudFront's requests reach the stage."""

    def acl(self, waf_alone: Assembly) -> dict[str, Any]:
        return waf_alone.one("api", "AWS::WAFv2::WebACL")

    def test_cloudfronts_requests_pass_everything_else_is_blocked(
        self, waf_alone: Assembly
    ) -> None:
        acl = self.acl(waf_alone)
        assert (acl["Scope"], acl["Name"]) == ("REGIONAL", "gatehouse-production-api")
        assert_edge_key_first(acl)
        # No other rule: they could only answer requests that are blocked anyway.
        assert [rule["Name"] for rule in acl["Rules"]] == ["edge-key"]
        assert_blocks_the_rest(acl)
        assert set(acl["CustomResponseBodies"]) == {"edge-required"}
        assert ip_sets(waf_alone, "api") == {}

    def test_it_guards_the_api_stage_once_the_stage_and_the_key_exist(
        self, waf_alone: Assembly
    ) -> None:
        assert_guards_the_stage(waf_alone)
        assert_after_the_edge_key(waf_alone)

    def test_cloudfront_sends_the_key_the_rule_expects(self, waf_alone: Assembly) -> None:
        [distribution] = waf_alone.resources("site", "AWS::CloudFront::Distribution").values()
        origins = distribution["Properties"]["DistributionConfig"]["Origins"]
        sent = {
            header["HeaderValue"]
            for origin in origins
            for header in origin.get("OriginCustomHeaders", [])
            if header["HeaderName"] == EDGE_HEADER
        }
        assert sent == {EDGE_KEY}
        assert function_variables(waf_alone, "APIHandler")["EDGE_SECRET"] == EDGE_KEY

    def test_the_api_refuses_calls_that_skip_cloudfront_too(self, waf_alone: Assembly) -> None:
        for name in FRONT_FUNCTIONS:
            variables = function_variables(waf_alone, name)
            assert variables["EDGE_REQUIRED"] == "true"
            assert "EDGE_EXEMPT_DOMAIN" not in variables

    def test_the_edge_web_acl_is_unchanged(self, waf_alone: Assembly) -> None:
        acl = waf_alone.one("edge", "AWS::WAFv2::WebACL")
        assert acl["DefaultAction"] == {"Allow": {}}
        assert "edge-key" not in rules(acl)

    def test_cfn_lint_finds_no_errors(self, waf_alone: Assembly) -> None:
        assert cfn_lint_errors(waf_alone) == []


class TestApiDomainWebAcl:
    """api.<domain> is not behind CloudFront: its requests meet the rules on the stage."""

    def acl(self, waf: Assembly) -> dict[str, Any]:
        return waf.one("api", "AWS::WAFv2::WebACL")

    def test_cloudfronts_requests_first_then_the_rules_then_the_api_domain(
        self, waf: Assembly
    ) -> None:
        acl = self.acl(waf)
        assert acl["Scope"] == "REGIONAL"
        assert acl["Name"] == "gatehouse-production-api"
        assert_edge_key_first(acl)
        _, *middle, last = acl["Rules"]
        # The same rules, at the same priorities, but Bot Control: machine clients are bots.
        expected = {k: v for k, v in EDGE_PRIORITIES.items() if "BotControl" not in k}
        assert {rule["Name"]: rule["Priority"] for rule in middle} == expected
        assert (last["Name"], last["Priority"], last["Action"]) == ("api-domain", 90, {"Allow": {}})
        assert last["Statement"] == {
            "ByteMatchStatement": {
                "FieldToMatch": {"SingleHeader": {"Name": "host"}},
                "PositionalConstraint": "EXACTLY",
                "SearchString": "api.example.com",
                "TextTransformations": [{"Priority": 0, "Type": "LOWERCASE"}],
            }
        }
        assert last["VisibilityConfig"]["SampledRequestsEnabled"] is True
        # Neither CloudFront's nor for api.<domain> (the execute-api host): blocked.
        assert_blocks_the_rest(acl)

    def test_paths_have_no_stage_prefix_on_the_api_domain(self, waf: Assembly) -> None:
        found = rules(self.acl(waf))
        admin, _ = found["admin-allow-list"]["Statement"]["AndStatement"]["Statements"]
        assert admin == {
            "OrStatement": {"Statements": [path_match("/users"), path_match("/admin")]}
        }
        auth = found["auth-rate-limit"]["Statement"]["RateBasedStatement"]
        assert auth["ScopeDownStatement"] == path_match("/auth/")
        assert_blocks(self.acl(waf), "rate-limit", 429, TOO_MANY)
        assert_blocks(self.acl(waf), "auth-rate-limit", 429, TOO_MANY)
        assert found["geo-block"]["Statement"]["GeoMatchStatement"]["CountryCodes"] == ["KP", "RU"]

    def test_the_rate_rule_leaves_the_machine_plan_its_rate(self, waf: Assembly) -> None:
        """apiKeys: a machine key may send machineRateLimit (10) a second, 3,000 per 5 minutes,
        above wafRateLimit (1,000): the site-wide rule on api.<domain> allows that much."""
        found = rules(self.acl(waf))
        assert found["rate-limit"]["Statement"]["RateBasedStatement"]["Limit"] == 3000
        edge = rules(waf.one("edge", "AWS::WAFv2::WebACL"))
        assert edge["rate-limit"]["Statement"]["RateBasedStatement"]["Limit"] == 1000

    def test_its_own_regional_ip_sets(self, waf: Assembly) -> None:
        sets = ip_sets(waf, "api")
        assert {s["Scope"] for s in sets.values()} == {"REGIONAL"}
        assert (sets["IPV4"]["Addresses"], sets["IPV6"]["Addresses"]) == (
            ["192.0.2.0/24"],
            ["2001:db8::/48"],
        )

    def test_it_guards_the_api_stage_once_the_stage_and_the_key_exist(self, waf: Assembly) -> None:
        assert_guards_the_stage(waf)
        assert_after_the_edge_key(waf)


class TestRefusal:
    def test_the_api_refuses_calls_that_skip_cloudfront_but_the_api_domain(
        self, waf: Assembly
    ) -> None:
        for name in FRONT_FUNCTIONS:
            variables = function_variables(waf, name)
            assert variables["EDGE_REQUIRED"] == "true"
            assert variables["EDGE_EXEMPT_DOMAIN"] == "api.example.com"
            assert "EDGE_SECRET" in variables

    def test_without_the_api_domain_nothing_is_exempt(self) -> None:
        assert runtime.edge_variables(required=True, exempt_domain=None) == {
            "EDGE_REQUIRED": "true"
        }
        assert runtime.edge_variables(required=False, exempt_domain="api.example.com") == {}


class TestChecks:
    def test_cfn_lint_finds_no_errors(self, waf: Assembly) -> None:
        assert cfn_lint_errors(waf) == []


class TestRulesAlone:
    """The edge construct by itself, for the shapes the full assembly does not take."""

    def acl(self, settings: WafSettings) -> Template:
        app = cdk.App()
        stack = cdk.Stack(app, "Edge", env=cdk.Environment(region="us-east-1"))
        Edge(stack, "Default", prefix="gatehouse-test", domain_name=None, zone=None, waf=settings)
        return Template.from_stack(stack)

    def test_one_address_family_needs_no_or(self) -> None:
        template = self.acl(
            WafSettings(rate_limit=100, auth_rate_limit=50, allow_list=("10.0.0.0/8",))
        )
        [ip_set] = template.find_resources("AWS::WAFv2::IPSet").values()
        assert ip_set["Properties"]["IPAddressVersion"] == "IPV4"
        [acl] = template.find_resources("AWS::WAFv2::WebACL").values()
        rule = rules(acl["Properties"])["admin-allow-list"]
        outside = rule["Statement"]["AndStatement"]["Statements"][1]
        assert "IPSetReferenceStatement" in outside["NotStatement"]["Statement"]

    def test_switches_off_leave_the_other_rules_where_they_were(self) -> None:
        template = self.acl(WafSettings(rate_limit=2000, auth_rate_limit=300))
        assert template.find_resources("AWS::WAFv2::IPSet") == {}
        [acl] = template.find_resources("AWS::WAFv2::WebACL").values()
        found = {rule["Name"]: rule["Priority"] for rule in acl["Properties"]["Rules"]}
        assert found == {
            name: priority
            for name, priority in EDGE_PRIORITIES.items()
            if name not in ("geo-block", "admin-allow-list", "AWSManagedRulesBotControlRuleSet")
        }
        assert found.items() <= PRIORITIES.items()
