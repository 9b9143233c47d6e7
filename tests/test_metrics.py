"""The business metrics: valid embedded-metric-format lines, one count per event, through the
app's log handler, with nothing personal in them."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from chalicelib import logs
from chalicelib.events import Client, InMemorySecurityEventRepository, SecurityEvents
from chalicelib.metrics import (
    DIMENSION,
    EVENT_METRICS,
    LOCKOUTS,
    LOGIN_FAILURES,
    LOGINS,
    METRICS,
    NAMESPACE,
    REFRESH_TOKEN_REUSE,
    SIGN_UPS,
    Metrics,
)
from chalicelib.settings import Settings, SettingsError
from tests.conftest import Api, FakeClock

PASSWORD = "correct horse battery"
UNITS = ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Count", "Count/Second", "None"]
# The embedded metric format's document, as CloudWatch's specification states it: the root's
# `_aws` member with a millisecond timestamp and metric directives; every dimension and metric
# a directive names is a member of the root (checked apart from the schema).
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 1024,
                                "pattern": r"^[^:].*$",
                            },
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1},
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_emf(line: dict[str, Any]) -> None:
    """``line`` is an EMF document CloudWatch extracts every declared metric from."""
    Draft202012Validator(EMF_SCHEMA).validate(line)
    for directive in line["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for dimension in dimension_set:
                assert isinstance(line[dimension], str), dimension
        for metric in directive["Metrics"]:
            value = line[metric["Name"]]
            assert isinstance(value, int | float)
            assert not isinstance(value, bool)


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the app's loggers write during a test, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    loggers = [logging.getLogger(name) for name in logs.LOGGER_NAMES]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for logger in loggers:
        logger.removeHandler(handler)


def metric_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "_aws" in line]


def counted(lines: list[dict[str, Any]]) -> Counter[str]:
    """Every metric the EMF lines count, summed over the lines."""
    total: Counter[str] = Counter()
    for line in metric_lines(lines):
        check_emf(line)
        for directive in line["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                total[metric["Name"]] += line[metric["Name"]]
    return total


class TestLines:
    def test_a_count_is_one_valid_emf_line_with_the_environment_its_only_dimension(
        self, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        moment = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)
        Metrics("staging", clock=lambda: moment).count([LOGINS, LOGIN_FAILURES, LOGINS])
        [line] = log_lines()
        check_emf(line)
        assert line["_aws"] == {
            "Timestamp": int(moment.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": [
                        {"Name": LOGINS, "Unit": "Count"},
                        {"Name": LOGIN_FAILURES, "Unit": "Count"},
                    ],
                }
            ],
        }
        assert (line[DIMENSION], line[LOGINS], line[LOGIN_FAILURES]) == ("staging", 2, 1)

    def test_nothing_counted_writes_nothing(
        self, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        Metrics("production").count([])
        Metrics("production").count_events(["logout_all", "mfa_enabled"])
        assert log_lines() == []

    def test_only_the_business_metrics_can_be_counted(self) -> None:
        with pytest.raises(ValueError, match="not a business metric: Username"):
            Metrics("production").count(["Username"])

    def test_every_counted_event_has_a_metric_and_every_metric_an_event(self) -> None:
        assert sorted(set(EVENT_METRICS.values())) == sorted(METRICS)
        assert len(set(METRICS)) == len(METRICS)

    def test_a_quieter_log_level_keeps_the_counts(
        self, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        parent = logging.getLogger("chalicelib")
        level = parent.level
        parent.setLevel(logging.WARNING)
        try:
            Metrics("production").count([SIGN_UPS])
        finally:
            parent.setLevel(level)
        assert counted(log_lines()) == Counter({SIGN_UPS: 1})

    def test_events_stored_together_are_counted_together_once(
        self, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        events = SecurityEvents(InMemorySecurityEventRepository(), metrics=Metrics("production"))
        client = Client(ip="198.51.100.7", user_agent="test")
        events.record_all(
            [
                events.entry("zoe-quill", "login_failure", client),
                events.entry("zoe-quill", "lockout", client, seconds=2),
            ]
        )
        events.record("zoe-quill", "logout_all", client)  # not a business metric
        [line] = metric_lines(log_lines())
        assert counted([line]) == Counter({LOGIN_FAILURES: 1, LOCKOUTS: 1})
        assert "zoe-quill" not in json.dumps(line)
        assert "198.51.100.7" not in json.dumps(line)

    def test_the_environment_comes_from_settings(self) -> None:
        base = {"TABLE_NAME": "t", "JWT_SECRET_ID": "s"}
        assert Settings.from_env(base).environment == "local"
        assert Settings.from_env({**base, "ENVIRONMENT": "staging"}).environment == "staging"
        with pytest.raises(SettingsError, match="ENVIRONMENT"):
            Settings.from_env({**base, "ENVIRONMENT": "Prod uction"})


@pytest.fixture
def staging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")


@pytest.mark.usefixtures("staging")
class TestThroughTheApi:
    """Each outcome through chalice's test client counts its metric once, and nothing else."""

    def test_a_signup(self, api: Api, log_lines: Callable[[], list[dict[str, Any]]]) -> None:
        api.signup("alice", PASSWORD)
        assert counted(log_lines()) == Counter({SIGN_UPS: 1})
        assert {line[DIMENSION] for line in metric_lines(log_lines())} == {"staging"}

    def test_a_login(self, api: Api, log_lines: Callable[[], list[dict[str, Any]]]) -> None:
        api.signup("alice", PASSWORD)
        before = counted(log_lines())
        api.login("alice", PASSWORD)
        assert counted(log_lines()) - before == Counter({LOGINS: 1})

    @pytest.mark.parametrize("username", ["alice", "nobody"])
    def test_a_failed_login_known_or_not(
        self, api: Api, log_lines: Callable[[], list[dict[str, Any]]], username: str
    ) -> None:
        api.signup("alice", PASSWORD)
        before = counted(log_lines())
        response = api.post("/auth/login", {"username": username, "password": "wrong password"})
        assert response.status_code == 401
        assert counted(log_lines()) - before == Counter({LOGIN_FAILURES: 1})

    def test_a_replayed_refresh_token(
        self, api: Api, clock: FakeClock, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        api.signup("alice", PASSWORD)
        login = api.post(
            "/auth/login",
            {"username": "alice", "password": PASSWORD, "refreshTokenDelivery": "body"},
        )
        stolen = login.json_body["refreshToken"]
        assert api.post("/auth/refresh", {"refreshToken": stolen}).status_code == 200
        clock.advance(seconds=11)  # past the grace window
        before = counted(log_lines())
        assert api.post("/auth/refresh", {"refreshToken": stolen}).status_code == 401
        assert counted(log_lines()) - before == Counter({REFRESH_TOKEN_REUSE: 1})

    def test_nothing_personal_or_secret_in_the_lines(
        self, api: Api, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> None:
        name = "zoe-quill"  # not "alice": the logger's name, "chalicelib...", holds that
        api.signup(name, PASSWORD)
        token = api.login(name, PASSWORD)
        api.post("/auth/login", {"username": name, "password": "wrong password"})
        lines = metric_lines(log_lines())
        assert len(lines) == 3
        allowed = {"level", "logger", "message", "_aws", DIMENSION, *METRICS}
        assert all(set(line) <= allowed for line in lines)
        text = json.dumps(lines)
        for secret in (name, PASSWORD, token, "127.0.0.1", "$scrypt$"):
            assert secret not in text
