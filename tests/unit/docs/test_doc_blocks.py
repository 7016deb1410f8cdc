"""Every command block of README.md and docs/ is run by a test (the documented path is the tested
path): a test claims a block by calling ``doc_block(path, index)`` (tests/support/doc_blocks.py)."""

from __future__ import annotations

from tests.support.doc_blocks import CLAIM, ROOT, command_blocks, commands, doc_block, documents


def claims() -> dict[tuple[str, int], list[str]]:
    found: dict[tuple[str, int], list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name in {"doc_blocks.py", "test_doc_blocks.py"}:
            continue
        for doc, index in CLAIM.findall(path.read_text()):
            found.setdefault((doc, int(index)), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_command_block_of_the_docs_is_run_by_a_test() -> None:
    claimed = claims()
    missing = [
        f"{doc} block {i}: {block.splitlines()[0] if block else ''}"
        for doc in documents()
        for i, block in enumerate(command_blocks(doc))
        if (doc, i) not in claimed
    ]
    assert not missing, "command blocks no test runs:\n" + "\n".join(missing)


def test_every_claim_names_a_block_that_exists() -> None:
    for (doc, index), where in claims().items():
        try:
            doc_block(doc, index)
        except (LookupError, FileNotFoundError) as err:
            raise AssertionError(f"{', '.join(where)}: {err}") from err


def test_commands_join_continuations_and_read_transcripts() -> None:
    assert commands("# a comment\nfoo --a \\\n  --b\n\nbar\n") == ["foo --a --b", "bar"]
    assert commands("$ keygen --out k\nkey id: 49d5\n$ ls k\nk.key\n") == ["keygen --out k", "ls k"]
