"""AWS round trips per route, counted with botocore's ``before-call`` hook (the scenario and the
budgets ``make bench`` prints): a change that adds a call to a login, a refresh, a signup or an
authenticated route fails here. Counting calls, not timing them."""

from __future__ import annotations

from chalice.test import Client

import app as app_module
from tools.bench import BUDGETS, legacy_hash, route_round_trips

PASSWORD = "correct horse battery"


def test_each_route_stays_within_its_round_trips(
    client: Client, dependencies: app_module.Dependencies
) -> None:
    counted = route_round_trips(
        client.http, dependencies, password=PASSWORD, legacy_hash=legacy_hash(PASSWORD)
    )
    assert [each.route for each in counted] == list(BUDGETS)
    over = {
        each.route: each.dynamodb for each in counted if len(each.dynamodb) > BUDGETS[each.route]
    }
    assert over == {}
    # The signing keys are read once per container (AWSCURRENT and AWSPREVIOUS), then cached.
    assert sum(len(each.secrets) for each in counted) == 2
