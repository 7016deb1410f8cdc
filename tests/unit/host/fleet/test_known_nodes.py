"""A node named on a command line that the fleet never saw (``fleet/known_nodes.py``): one line
with the known names closest to it."""

from __future__ import annotations

import argparse

import pytest

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.known_nodes import UnknownNodeError, add_force_argument, require_seen

KNOWN = ["pi-0049", "pi-0409", "pi-1234", "lab-7"]


def refusal(names: list[str], known: list[str]) -> str:
    with pytest.raises(UnknownNodeError) as caught:
        require_seen(names, known, where="by the hub")
    assert isinstance(caught.value, FleetError)  # the command lines' one-line error
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_known_nodes_pass() -> None:
    require_seen(["pi-0049", "lab-7", "pi-0049"], KNOWN, where="by the hub")
    require_seen([], [], where="by the hub")


def test_one_unknown_node_with_the_closest_names_first() -> None:
    assert refusal(["pi-0499"], KNOWN) == (
        "node 'pi-0499' was never seen by the hub (known: pi-0409, pi-0049, ...); "
        "--force to go ahead"
    )


def test_every_known_name_is_listed_without_dots_when_they_are_all_close() -> None:
    assert "(known: pi-0409, pi-0049);" in refusal(["pi-0499"], ["pi-0049", "pi-0409"])


def test_nothing_alike_and_nothing_known() -> None:
    assert "(none alike of 4 known)" in refusal(["gateway"], KNOWN)
    assert "(no node seen yet)" in refusal(["pi-0001"], [])


def test_several_unknown_nodes_are_one_line() -> None:
    text = refusal(["pi-0499", "pi-0049", "pi-1235", "pi-0499"], KNOWN)
    assert text.startswith("nodes 'pi-0499' (known: pi-0409, pi-0049, ...), 'pi-1235' (known: ")
    assert text.endswith("were never seen by the hub; --force to go ahead")


def test_force_says_what_it_does() -> None:
    parser = argparse.ArgumentParser()
    add_force_argument(parser, "send it to")
    assert parser.parse_args(["--force"]).force
    assert not parser.parse_args([]).force
    assert "send it to a node never seen" in parser.format_help().replace("\n", " ").replace(
        "  ", " "
    )
