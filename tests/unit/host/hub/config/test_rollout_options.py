"""``rollout start``'s options (tools/edge_agent_host/hub/config/rollout_options.py) as
``[learning] rollout`` and the command lines take them: the preflight's steps under their name
and under their former one."""

from __future__ import annotations

from edge_agent_host.cli import build_parser
from edge_agent_host.hub.config.rollout_options import parse_start_options


def test_the_preflight_steps_under_both_names() -> None:
    assert parse_start_options(["--group", "g"]).health_steps == 20
    assert parse_start_options(["--group", "g", "--preflight-steps", "7"]).health_steps == 7
    assert parse_start_options(["--group", "g", "--health-steps", "9"]).health_steps == 9
    deploy = ["hub", "deploy", "b.tar", "--key", "k", "--node", "n", "--group", "g"]
    args = build_parser().parse_args([*deploy, "--preflight-steps", "5"])
    assert args.health_steps == 5
    assert build_parser().parse_args([*deploy, "--health-steps", "6"]).health_steps == 6
