"""Every ``pip install`` the docs, ``--help`` texts and error messages show installs what we build
or a known dependency: never PyPI's ``edge-agent``, which is another project (README.md, "Why the
name").

Read: README.md, docs/**/*.md, systemd/README.md (code blocks and inline code) and every string
of edge_agent/ and tools/ (help texts, error messages, docstrings). A requirement may name our
distribution (``edge-agent-runtime[EXTRA]``), our wheel (``edge_agent_runtime-*.whl``), the
checkout (``.``, ``-e .``, ``'.[host]'``) or a distribution that pyproject.toml depends on (any
extra) or that :data:`THIRD_PARTY` lists; anything else fails with its file and line.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.doc_blocks import ROOT, documents

OURS = "edge-agent-runtime"
OUR_WHEEL = re.compile(r"^edge_agent_runtime-[^/]*\.whl$")
#: Installed by name in the docs without being a dependency of ours: pip and the build tools,
#: TensorFlow for 'convert tflite' of a SavedModel, LiteRT's fallback for platforms without
#: ai-edge-litert wheels, and the peers bench_peers.py compares against.
THIRD_PARTY = frozenset({
    "pip", "setuptools", "wheel", "build", "tensorflow-cpu", "tensorflow", "tflite-runtime",
    "inferactively-pymdp", "msgspec",
})
#: ``pip install`` in any spelling: pip3, python -m pip, uv pip, /opt/.../bin/pip.
PIP_INSTALL = re.compile(r"\bpip3?(?:\.\d+)?\s+install\b")
#: Options that take a value (the next word, unless given as --opt=value).
VALUE_OPTIONS = frozenset({
    "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation",
    "--abi", "--only-binary", "--no-binary", "--progress-bar", "--cache-dir", "--python",
    "--upgrade-strategy", "--src", "--log",
})
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ">", ">>", "2>&1", ")"})
REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*"
    r"(?P<rest>(?:[<>=!~;@].*)?)$"
)


def normalize(name: str) -> str:
    """PEP 503: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_names() -> frozenset[str]:
    """Our distribution, every distribution pyproject.toml's dependencies and extras name, the
    build backend, and :data:`THIRD_PARTY`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [
        *project["project"]["dependencies"],
        *(r for extra in project["project"]["optional-dependencies"].values() for r in extra),
        *project["build-system"]["requires"],
    ]
    names = {OURS, *THIRD_PARTY}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement.strip())
        assert match, f"pyproject.toml: cannot read requirement {requirement!r}"
        names.add(match["name"])
    return frozenset(normalize(n) for n in names)


class InstallLine:
    """One ``pip install`` found at ``where``: what follows ``install`` on it."""

    def __init__(self, where: str, rest: str) -> None:
        self.where, self.rest = where, rest

    def __repr__(self) -> str:
        return f"{self.where}: pip install {self.rest}"


def requirements(rest: str) -> list[str]:
    """The requirements a ``pip install`` line names: each word after ``install`` up to the end of
    the command (a shell operator, a comment, or words that are no requirement: prose after an
    inline command). Options and their values are skipped; ``-r FILE`` and ``-e PATH`` are
    returned as ``-r FILE`` and the path."""
    try:
        words = shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote: prose around the command
        words = rest.split()
    found: list[str] = []
    words_iter = iter(words)
    for word in words_iter:
        if word in SHELL_OPERATORS or word.startswith(("...", "…", "(")):
            break
        if word in {"-r", "--requirement"}:
            found.append(f"-r {next(words_iter, '')}")
        elif word in {"-e", "--editable"}:
            found.append(next(words_iter, ""))
        elif word in VALUE_OPTIONS:
            next(words_iter, None)
        elif word.startswith("-"):
            continue
        elif is_path(word) or REQUIREMENT.match(word):
            found.append(word)
        else:
            break
    return found


def is_path(word: str) -> bool:
    """A local file or directory (the checkout, a wheel), not a name on an index."""
    return word.startswith((".", "/", "~", "$", "file:")) or ".whl" in word or "/" in word


def problem(requirement: str, allowed: frozenset[str]) -> str | None:
    """Why ``requirement`` must not be in the docs, or None when it installs what we build or a
    known dependency."""
    if requirement.startswith("-r "):
        path = ROOT / requirement[3:]
        return None if path.is_file() else f"{requirement}: no such file in the repository"
    if ".whl" in requirement:
        wheel = requirement.split(".whl", 1)[0].rsplit("/", 1)[-1] + ".whl"
        ok = OUR_WHEEL.match(wheel)
        return None if ok else f"{requirement}: a wheel that is not ours (edge_agent_runtime-*)"
    if is_path(requirement):
        return None  # the checkout, a directory of it
    match = REQUIREMENT.match(requirement)
    assert match is not None
    name = normalize(match["name"])
    if name == "edge-agent":
        return f"{requirement}: PyPI's edge-agent is another project; ours is {OURS}"
    if name not in allowed:
        return f"{requirement}: {match['name']} is neither ours ({OURS}) nor a known dependency"
    return None


def _inline_code(text: str) -> Iterator[tuple[int, str]]:
    """``(line, code)`` of each inline code span outside fenced blocks, whitespace collapsed."""
    for match in re.finditer(r"(`+)(.+?)\1", text, flags=re.S):
        yield text.count("\n", 0, match.start()) + 1, " ".join(match[2].split())


def markdown_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a Markdown file's code: each command of a fenced block
    (``\\`` continuations joined) and each inline code span."""
    text = path.read_text()
    fences = list(re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M))
    outside, last = [], 0
    for fence in fences:
        outside.append(text[last:fence.start()] + "\n" * fence[0].count("\n"))
        last = fence.end()
        first = text.count("\n", 0, fence.start(1)) + 1
        pending, start = "", first
        for offset, raw in enumerate(fence[1].splitlines()):
            line = raw.rstrip()
            if not pending:
                start = first + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
    outside.append(text[last:])
    yield from _inline_code("".join(outside))


def python_strings(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every string literal of a module (f-strings with ``{...}`` for their
    fields, adjacent literals joined, whitespace collapsed): help texts, messages, docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts_of_fstrings = {
        id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values
    }
    for node in ast.walk(tree):
        if id(node) in parts_of_fstrings:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, " ".join(node.value.split())
        elif isinstance(node, ast.JoinedStr):
            parts = [
                v.value if isinstance(v, ast.Constant) else "{...}" for v in node.values
            ]
            yield node.lineno, " ".join("".join(str(p) for p in parts).split())


def install_lines() -> list[InstallLine]:
    """Every ``pip install`` of the docs and of the strings in edge_agent/ and tools/."""
    sources: list[tuple[str, Iterator[tuple[int, str]]]] = [
        (doc, markdown_lines(ROOT / doc)) for doc in documents()
    ]
    for package in ("edge_agent", "tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            sources.append((str(path.relative_to(ROOT)), python_strings(path)))
    found = []
    for name, lines in sources:
        for number, line in lines:
            for match in PIP_INSTALL.finditer(line):
                rest = line[match.end():].split("`", 1)[0]
                found.append(InstallLine(f"{name}:{number}", rest))
    return found


def test_every_pip_install_names_ours_or_a_known_dependency() -> None:
    allowed = allowed_names()
    lines = install_lines()
    assert len(lines) >= 10  # the docs and messages do install things: the reader found them
    problems = []
    for line in lines:
        found = requirements(line.rest)
        if not found:
            # A mention ("do not `pip install` into ...") has no words; an error message quoted
            # with an elision ("pip install ...[onnx] failed") names nothing.
            if line.rest.strip() and not line.rest.lstrip().startswith(("...", "…")):
                problems.append(f"{line!r}: no requirement could be read")
            continue
        problems += [f"{line!r}: {p}" for r in found if (p := problem(r, allowed)) is not None]
    assert not problems, "\n".join(problems)


def test_the_messages_for_a_missing_extra_are_read() -> None:
    where = {line.where.split(":")[0] for line in install_lines()}
    assert {"edge_agent/errors.py", "tools/edge_agent_host/hub/storage/engines.py", "README.md",
            "docs/deployment.md", "docs/host-tool.md"} <= where


@pytest.mark.parametrize(
    "line",
    [
        "pip install 'edge-agent[hub]'",
        "sudo /opt/edge-agent/venv/bin/pip install 'edge-agent[onnx]'     # or a wheel",
        "pip install --upgrade edge-agent",
        "python3 -m pip install -q Edge_Agent==0.4.0",
        "uv pip install edge.agent",
        'pip install --only-binary=:all: "edge_agent-*.whl[onnx,tflite]"',
        "pip3 install numpy requests",
        "pip install -r no-such-requirements.txt",
    ],
)
def test_what_the_audit_refuses(line: str) -> None:
    (match,) = PIP_INSTALL.finditer(line)
    found = requirements(line[match.end():])
    assert found
    assert any(problem(r, allowed_names()) for r in found), found


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pip install 'edge-agent-runtime[{...}]'", ["edge-agent-runtime[{...}]"]),
        ('pip install "$(echo dist/edge_agent_runtime-*.whl)[onnx]"  # pip wheel -w dist .',
         ["$(echo dist/edge_agent_runtime-*.whl)[onnx]"]),
        ("python -m pip install -q -e '.[dev]' && edge-agent --version", [".[dev]"]),
        ("pip install 'tensorflow-cpu>=2.16' (tested with 2.21)", ["tensorflow-cpu>=2.16"]),
        ("pip install --only-binary=:all: -i https://x/simple onnxruntime", ["onnxruntime"]),
        ("pip install ...[onnx,tflite] from aarch64 wheels failed", []),
    ],
)
def test_what_the_audit_reads(line: str, expected: list[str]) -> None:
    (match,) = PIP_INSTALL.finditer(line)
    found = requirements(line[match.end():])
    assert found == expected
    assert not any(problem(r, allowed_names()) for r in found)
