"""The docs' blocks that need a running systemd, as scripts/test-deb-boot ran them.

Those blocks (install the .deb, ``systemctl``, ``journalctl``, the install by hand, the hub's venv)
need root, a booted systemd and the built package, which a test process cannot have. So
``scripts/test-deb-boot`` (run by ``scripts/test-deb``, before ``scripts/test`` in CI) runs them as
written on a Debian trixie amd64 root booted with ``systemd-nspawn --boot`` and records each
block's text hash and every command's exit code in ``$EDGE_AGENT_ARM64_CACHE/deb-boot.json``.
These tests hold each block to that record: the block as it is now must be the one that ran, and
every command and check must have passed. No record, or a block edited since, fails with the
command to run (docs/deployment.md, "Install from a .deb", "Test").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.doc_blocks import ROOT, commands, doc_block

pytestmark = pytest.mark.integration

HOW = (
    "run: sudo EDGE_AGENT_ARM64_CACHE={cache} scripts/test-deb-boot  (after sudo scripts/build-deb "
    "trixie amd64; scripts/test-deb runs both)"
)


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_ARM64_CACHE") or ROOT / ".cache")


def record() -> dict[str, Any]:
    path = cache_dir() / "deb-boot.json"
    if not path.is_file():
        pytest.fail(f"no record of the booted run at {path}; {HOW.format(cache=cache_dir())}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def ran(doc: str, index: int, text: str) -> dict[str, Any]:
    """The recorded run of block ``index`` of ``doc``, which must be ``text`` as it is now."""
    runs = [b for b in record()["blocks"] if (b["doc"], b["index"]) == (doc, index)]
    if not runs:
        pytest.fail(f"{doc} block {index} is not in the booted run's record; "
                    + HOW.format(cache=cache_dir()))
    block = runs[0]
    if block["sha256"] != hashlib.sha256(text.encode()).hexdigest():
        pytest.fail(f"{doc} block {index} changed since scripts/test-deb-boot ran it; "
                    + HOW.format(cache=cache_dir()))
    failed = [c for c in block["commands"] if not c["ok"]]
    if failed:
        first = failed[0]
        pytest.fail(f"{doc} block {index}: {first['as_run']!r} exited {first['exit']}:\n"
                    f"{first['output_tail']}")
    # Every command of the block ran, as written (only the package's architecture substituted).
    assert [c["command"] for c in block["commands"]] == commands(text)
    for c in block["commands"]:
        assert c["as_run"] in (c["command"], c["command"].replace("_arm64.deb", "_amd64.deb"))
    return block


def test_install_from_the_deb_on_a_booted_trixie() -> None:
    ran("docs/deployment.md", 2, doc_block("docs/deployment.md", 2))


def test_running_it_status_journal_reload_restart() -> None:
    ran("docs/deployment.md", 3, doc_block("docs/deployment.md", 3))


def test_metrics_acl_and_systemctl_edit() -> None:
    ran("docs/deployment.md", 4, doc_block("docs/deployment.md", 4))


def test_install_by_hand() -> None:
    ran("docs/deployment.md", 0, doc_block("docs/deployment.md", 0))


def test_systemd_readme_dropin_and_install_in_short() -> None:
    ran("systemd/README.md", 0, doc_block("systemd/README.md", 0))
    ran("systemd/README.md", 1, doc_block("systemd/README.md", 1))


def test_the_hub_installs_into_its_own_venv() -> None:
    ran("docs/hub.md", 0, doc_block("docs/hub.md", 0))


def test_checks_after_the_blocks_passed() -> None:
    """The unit active after each install, the package's profile drop-in in effect, a refused
    config failing `systemctl reload` with the daemon still running, the hub's venv with its
    extra, the compiled tick in the wheel built by hand: every check
    scripts/arm64/boot-doc-blocks made passed."""
    checks = record()["checks"]
    names = " | ".join(c["check"] for c in checks)
    needs = ("drop-in for the detected profile", "refused config", "hub's venv has its extra",
             "built by hand carries the compiled tick")
    for needed in needs:
        assert needed in names, f"no check '{needed}' in the record"
    failed = [c for c in checks if not c["ok"]]
    assert not failed, "\n".join(
        f"{c['check']}: exit {c['exit']}, expected {c['expected_exit']}\n{c['output_tail']}"
        for c in failed
    )


def test_make_deb_builds_each_suite_and_architecture() -> None:
    """docs/deployment.md's build block: the make targets scripts/test-deb ran, one package per
    suite and architecture, with the file names the block shows."""
    text = doc_block("docs/deployment.md", 1)
    path = cache_dir() / "deb-builds.json"
    if not path.is_file():
        pytest.fail(f"no record of scripts/test-deb's builds at {path}; run: sudo "
                    f"EDGE_AGENT_ARM64_CACHE={cache_dir()} scripts/test-deb")
    builds: list[dict[str, str]] = json.loads(path.read_text())["builds"]
    made = {b["command"]: b["package"] for b in builds}
    for line in commands(text):
        command, _, comment = line.partition("#")
        command = command.strip().removeprefix("sudo ")
        assert command in made, f"scripts/test-deb did not run '{command}' (it ran {sorted(made)})"
        assert made[command] in comment, f"'{command}' made {made[command]}; the block: {comment}"
