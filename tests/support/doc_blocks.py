"""The command blocks of README.md and docs/, for the tests that run them as written.

A test that runs a block gets its text with ``doc_block("docs/hub.md", 2)`` (the path from the
repository root, the block's 0-based index among that file's command blocks). The call is also the
claim: ``tests/unit/docs/test_doc_blocks.py`` reads every test file for such calls and fails on a
command block that no test claims, so a block added to the docs without a test cannot land.

A command block is a fenced block whose info string is ``sh``, ``bash``, ``shell`` or ``console``.
Blocks of other kinds (``toml``, ``python``, ``text``, ``json``) are not commands.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COMMAND_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```", flags=re.S | re.M)
#: How a test claims a block: doc_block("docs/x.md", 3)
CLAIM = re.compile(r"""doc_block\(\s*["']([^"']+)["']\s*,\s*(\d+)\s*\)""")


def command_blocks(path: str | Path) -> list[str]:
    """The command blocks of one Markdown file, in order (``path`` relative to the root)."""
    text = (ROOT / path).read_text()
    return [body for lang, body in _FENCE.findall(text) if lang in COMMAND_LANGUAGES]


def doc_block(path: str, index: int) -> str:
    """The text of command block ``index`` of ``path``; fails with the file's count if absent."""
    blocks = command_blocks(path)
    if not 0 <= index < len(blocks):
        raise LookupError(f"{path} has {len(blocks)} command blocks, no block {index}")
    return blocks[index]


def documents() -> list[str]:
    """README.md, every Markdown file under docs/ and systemd/README.md, relative to the root."""
    docs = sorted((ROOT / "docs").rglob("*.md"))
    paths = [ROOT / "README.md", ROOT / "systemd" / "README.md", *docs]
    return [str(p.relative_to(ROOT)) for p in paths if p.is_file()]


def commands(block: str) -> list[str]:
    """The commands of a block, one string each: comments and blank lines dropped, ``\\``
    continuations joined. In a transcript (a block whose commands start with ``$ ``) only the
    prompted lines are commands, the rest is their output."""
    lines = block.splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    out: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.rstrip()
        if not pending:
            if transcript and not line.startswith("$ "):
                continue
            line = line.removeprefix("$ ")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if pending:
            line = line.strip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending.strip())
    return out
