"""A neural group's [groups.policy] table (edge_agent.neural.policy_table): read at its lines,
it reaches the group's agents through the neural kind; without it they take the argmax."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.daemon.admission import admit
from edge_agent.errors import ConfigError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.policy_table import NeuralPolicy
from tests.unit.daemon.test_admission import NEURAL, bundles, config, profiles

__all__ = ["bundles", "profiles"]  # the admission tests' fixtures, used here too

POLICY = '[groups.policy]\nselection = "sample"\ntemperature = 0.5\n'


def test_the_policy_table_sets_how_a_neural_group_selects(
    bundles: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    groups = NEURAL.format(name="plain", count=4) + NEURAL.format(name="sampled", count=4) + POLICY
    source = read_config(config(bundles, groups, "policy.toml"), profiles=profiles)
    plain_cfg, sampled_cfg = source.config.groups
    assert plain_cfg.table_of(NeuralPolicy) is None
    assert sampled_cfg.table_of(NeuralPolicy) == NeuralPolicy(selection="sample", temperature=0.5)
    _profile, _budget, (plain, sampled) = admit(source)
    try:
        assert isinstance(plain.agents, NeuralAgentGroup)
        assert isinstance(sampled.agents, NeuralAgentGroup)
        assert (plain.agents.selection, plain.agents.temperature) == ("argmax", 1.0)
        assert (sampled.agents.selection, sampled.agents.temperature) == ("sample", 0.5)
    finally:
        plain.release()
        sampled.release()


def test_a_bad_policy_is_one_line_at_its_key(
    bundles: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    path = config(
        bundles, NEURAL.format(name="a", count=4) + POLICY.replace("0.5", "0"), "bad.toml"
    )
    with pytest.raises(ConfigError) as err:
        read_config(path, profiles=profiles)
    assert str(err.value) == f"{path}:15: groups[0].policy.temperature: must be > 0.0, got 0"
