"""The configs shown in docs/configuration.md are files that load, and its profile snippets say
what the shipped profiles say: the docs cannot drift from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from edge_agent.config.daemon import read_config, resolve_profile
from edge_agent.config.profiles import FirmwareProfile, load_profiles

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLES = ROOT / "docs" / "examples"


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


def test_every_daemon_config_in_the_doc_is_an_example_file_that_loads(
    profiles: dict[str, FirmwareProfile],
) -> None:
    configs = [b for b in toml_blocks() if "[[groups]]" in b]
    files = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.toml"))}
    assert len(configs) == 2
    for block in configs:
        match = [name for name, text in files.items() if text == block]
        assert match, f"this block of docs/configuration.md is no file in docs/examples:\n{block}"
    for path in sorted(EXAMPLES.glob("*.toml")):
        shown = [doc.name for doc in (ROOT / "docs").glob("*.md") if path.name in doc.read_text()]
        assert shown or path.read_text() in configs, f"{path} is shown by no doc"
        source = read_config(path, profiles=profiles)
        resolve_profile(source, profiles=profiles)  # and it suits its profile


def test_profile_snippets_say_what_the_shipped_profiles_say() -> None:
    snippets = [tomllib.loads(b) for b in toml_blocks() if "[[groups]]" not in b]
    shipped = {
        p.stem: tomllib.loads(p.read_text()) for p in (ROOT / "firmware_profiles").glob("*.toml")
    }
    checked = 0
    for snippet in snippets:
        if "name" in snippet:  # a whole profile: every key as shipped
            assert snippet == shipped[snippet["name"]], snippet["name"]
            checked += 1
        elif "memory_tiers" in snippet:  # a tier of the cm4 profile
            for tier in snippet["memory_tiers"]:
                assert tier in shipped["cm4"]["memory_tiers"], tier
                checked += 1
    assert checked >= 2


def test_no_document_keeps_an_unfilled_template_field() -> None:
    """A line that is only ``{name}`` is a placeholder a script or an editor meant to fill (one
    stood in the benchmark notes where a results table belonged)."""
    documents = [
        ROOT / "README.md", *ROOT.glob("benchmarks/notes/*.md"), *ROOT.glob("docs/*.md"),
    ]
    unfilled = [
        f"{doc.relative_to(ROOT)}:{number}: {line}"
        for doc in documents
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        if re.fullmatch(r"\s*\{[a-z_]+\}\s*", line)
    ]
    assert unfilled == []
