"""tests/support/transcripts.py: numbers, ids and hashes may differ from the doc's transcript;
words, units and lines may not."""

from __future__ import annotations

from tests.support.transcripts import Step, matches, steps

SHOWN = [
    "  model size (bytes)                       1,240   359      29.0 %",
    "  belief KL mean                        2.17e-24",
    "bundle t: 4,011 payload bytes, sha256 0e33a61455f0108d…, signed by key b6998c73199724b6",
]


def test_steps_split_commands_continuations_and_outputs() -> None:
    block = "$ a --x \\\n      --y\nout 1\n\n$ b\n$ c\nout c\n\n"
    assert steps(block) == [Step("a --x --y", ["out 1"]), Step("b", []), Step("c", ["out c"])]


def test_other_numbers_ids_and_widths_match() -> None:
    real = (
        "  model size (bytes)                     12,240  3590     129.5 %\n"
        "  belief KL mean                        3e-20\n"
        "bundle t: 11 payload bytes, sha256 3889d61ac961e25b…, signed by key 5a2292a51af707cf\n"
    )
    assert matches(SHOWN, real) is None


def test_other_words_units_or_lines_do_not() -> None:
    good = [line.strip() for line in SHOWN]
    assert matches(SHOWN, "\n".join([good[0].replace("bytes", "kB"), *good[1:]]))
    assert matches(SHOWN, "\n".join([good[0], good[1].replace("mean", "max"), good[2]]))
    assert matches(SHOWN, "\n".join(good[:2]))
    assert matches(SHOWN, "\n".join([*good, "warning: something"]))
    assert matches(SHOWN, "\n".join([good[0], good[1], good[2].replace("sha256", "md5")]))
