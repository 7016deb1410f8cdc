"""What every test shares: Hypothesis runs without a clock.

The suite runs on shared, loaded machines (CI runs two suites at once on two cores): no test may
depend on how fast the machine is. Hypothesis' deadline (200 ms an example) and its ``too_slow``
health check (examples generated too slowly) are both a matter of time, so the profile loaded here
turns them off for every property test; what a test sets with ``@settings`` still applies on top.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")
