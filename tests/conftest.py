"""What every test shares: Hypothesis runs without a clock, and each run ends with each test
file's time against its budget and the slowest tests.

The suite runs on shared, loaded machines (CI runs two suites at once on two cores): no test may
depend on how fast the machine is. Hypothesis' deadline (200 ms an example) and its ``too_slow``
health check (examples generated too slowly) are both a matter of time, so the profile loaded here
turns them off for every property test; what a test sets with ``@settings`` still applies on top.
The time report (:mod:`tests.support.budgets`; the budgets: tests/budgets.toml) never fails a
test either. MQTT clients a test file leaves running fail its last teardown
(:mod:`tests.support.client_threads`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from edge_agent.errors import ConfigError
from tests.support.budgets import TimeBudget, read_budgets
from tests.support.client_threads import ClientThreads

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


def pytest_configure(config: pytest.Config) -> None:
    try:
        budgets = read_budgets(ROOT)
    except ConfigError as err:
        raise pytest.UsageError(f"the test files' budgets:\n{err}") from err
    config.pluginmanager.register(TimeBudget(budgets), "time-budget")
    config.pluginmanager.register(ClientThreads(), "client-threads")
