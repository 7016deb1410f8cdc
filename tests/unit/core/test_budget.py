"""MemoryBudget, Reservation, plan(), RssSampler and format_bytes."""

from __future__ import annotations

import json
import threading

import numpy as np
import psutil
import pytest

from edge_agent.core.budget import MemoryBudget, MiB, RssSampler, format_bytes
from edge_agent.errors import BudgetError, EdgeAgentError, InputError


def test_base_bytes_count_as_used_from_the_start() -> None:
    budget = MemoryBudget(100 * MiB, base_bytes=30 * MiB, profile_name="pi4-2g")
    assert (budget.total, budget.used, budget.available) == (100 * MiB, 30 * MiB, 70 * MiB)
    assert budget.by_owner() == {"daemon": 30 * MiB}
    assert budget.by_kind() == {"base": 30 * MiB}
    assert budget.soft_limit == 90 * MiB
    assert budget.profile_name == "pi4-2g"


def test_reserve_and_release_update_the_accounting() -> None:
    budget = MemoryBudget(100 * MiB)
    history = budget.reserve("grid", "history", 10 * MiB)
    agents = budget.reserve("grid", "agents", 5 * MiB)
    budget.reserve("patrol", "history", 1 * MiB)
    assert budget.used == 16 * MiB
    assert budget.by_owner() == {"grid": 15 * MiB, "patrol": 1 * MiB}
    assert budget.by_kind() == {"history": 11 * MiB, "agents": 5 * MiB}
    history.release()
    assert history.released
    history.release()  # idempotent
    assert budget.used == 6 * MiB
    agents.release()
    assert budget.by_owner() == {"patrol": 1 * MiB}


def test_shared_key_is_counted_once_and_reference_counted() -> None:
    budget = MemoryBudget(100 * MiB, base_bytes=4 * MiB)
    first = budget.reserve("grid", "model", 20 * MiB, shared_key="model:maze-v3")
    second = budget.reserve("patrol", "model", 20 * MiB, shared_key="model:maze-v3")
    assert budget.used == 24 * MiB
    assert budget.by_kind() == {"base": 4 * MiB, "model": 20 * MiB}
    assert budget.by_owner() == {"daemon": 4 * MiB, "grid": 20 * MiB}
    assert budget.fits(20 * MiB, shared_key="model:maze-v3")
    assert budget.report()["shared"] == {
        "model:maze-v3": {"kind": "model", "nbytes": 20 * MiB, "holders": ["grid", "patrol"]}
    }

    first.release()
    first.release()  # a second release must not drop the other holder's count
    assert budget.used == 24 * MiB
    assert budget.by_owner() == {"daemon": 4 * MiB, "patrol": 20 * MiB}
    second.release()
    assert budget.used == 4 * MiB
    assert budget.report()["shared"] == {}
    # The key is free again: a new reserve counts the bytes again and may use another size.
    budget.reserve("grid", "model", 8 * MiB, shared_key="model:maze-v3")
    assert budget.used == 12 * MiB


def test_shared_key_with_a_different_size_or_kind_is_refused() -> None:
    budget = MemoryBudget(100 * MiB)
    budget.reserve("grid", "model", 20 * MiB, shared_key="m")
    with pytest.raises(BudgetError, match=r"shared key 'm' is reserved as model of 20\.0 MiB"):
        budget.reserve("patrol", "model", 21 * MiB, shared_key="m")
    with pytest.raises(BudgetError, match=r"'patrol' asked for scratch of 20\.0 MiB"):
        budget.reserve("patrol", "scratch", 20 * MiB, shared_key="m")
    assert budget.used == 20 * MiB
    assert not budget.fits(21 * MiB, shared_key="m")


def test_refusal_says_what_was_asked_what_is_left_and_what_to_change() -> None:
    budget = MemoryBudget(64 * MiB, base_bytes=40 * MiB, profile_name="pi-zero-2w")
    budget.reserve("patrol", "history", 20 * MiB)
    hint = "reduce group 'grid' count from 1000 to at most 612"
    with pytest.raises(BudgetError) as info:
        budget.reserve("grid", "history", 6_815_744, hint=hint)  # 6.5 MiB
    message = str(info.value)
    for part in (
        "'grid'",
        "history",
        "asked 6.5 MiB (6,815,744 bytes)",
        "only 4.0 MiB (4,194,304 bytes)",
        "of the 64.0 MiB (67,108,864 bytes) budget",
        "profile 'pi-zero-2w'",
        "(60.0 MiB used;",
        "short by 2.5 MiB",
        f"To fit: {hint}",
    ):
        assert part in message, f"{part!r} not in {message!r}"
    assert budget.used == 60 * MiB  # nothing was reserved

    with pytest.raises(BudgetError, match="choose a profile with a larger budget"):
        budget.reserve("grid", "history", 5 * MiB)


def test_request_that_exactly_fills_the_budget_fits() -> None:
    budget = MemoryBudget(10 * MiB, base_bytes=1 * MiB)
    assert budget.fits(9 * MiB)
    assert not budget.fits(9 * MiB + 1)
    budget.reserve("grid", "agents", 9 * MiB)
    assert budget.available == 0
    assert budget.fits(0)
    with pytest.raises(BudgetError):
        budget.reserve("grid", "agents", 1)


def test_reservation_resize_checks_growth() -> None:
    budget = MemoryBudget(10 * MiB, profile_name="tiny")
    r = budget.reserve("grid", "history", 4 * MiB)
    budget.reserve("patrol", "history", 2 * MiB)
    r.resize(8 * MiB)
    assert (r.nbytes, budget.used) == (8 * MiB, 10 * MiB)
    r.resize(1 * MiB)
    assert budget.used == 3 * MiB
    with pytest.raises(BudgetError, match=r"to grow from 1\.0 MiB to 10\.0 MiB, \+9\.0 MiB") as e:
        r.resize(10 * MiB, hint="shorten history_capacity")
    assert "To fit: shorten history_capacity" in str(e.value)
    assert "profile 'tiny'" in str(e.value)
    assert (r.nbytes, budget.used) == (1 * MiB, 3 * MiB)
    r.release()
    with pytest.raises(BudgetError, match="it was released"):
        r.resize(1)


def test_shared_reservation_resizes_only_while_sole_holder() -> None:
    budget = MemoryBudget(100 * MiB)
    a = budget.reserve("grid", "model", 10 * MiB, shared_key="m")
    b = budget.reserve("patrol", "model", 10 * MiB, shared_key="m")
    with pytest.raises(BudgetError, match=r"held by 2 reservations \('grid', 'patrol'\)"):
        a.resize(12 * MiB)
    b.release()
    a.resize(12 * MiB)
    assert budget.used == 12 * MiB
    assert budget.fits(12 * MiB, shared_key="m")
    a.release()
    assert budget.used == 0


def test_context_manager_releases_only_when_the_block_raises() -> None:
    budget = MemoryBudget(100 * MiB)
    with budget.reserve("grid", "history", 10 * MiB) as kept:
        pass
    assert not kept.released
    assert budget.used == 10 * MiB

    def allocate_and_fail() -> None:
        with budget.reserve("patrol", "history", 20 * MiB):
            raise MemoryError("allocation failed")

    with pytest.raises(MemoryError):
        allocate_and_fail()
    assert budget.used == 10 * MiB
    assert budget.by_owner() == {"grid": 10 * MiB}


def test_plan_reports_every_line_that_does_not_fit() -> None:
    budget = MemoryBudget(100 * MiB, base_bytes=10 * MiB, profile_name="pi3")
    budget.reserve("old", "model", 5 * MiB, shared_key="model:a")
    requests: list[tuple[str, str, int, str | None]] = [
        ("grid", "model", 5 * MiB, "model:a"),  # already reserved: counts 0
        ("grid", "history", 40 * MiB, None),
        ("patrol", "model", 30 * MiB, "model:b"),
        ("patrol2", "model", 30 * MiB, "model:b"),  # repeated key: counts 0
        ("patrol", "history", 20 * MiB, None),  # running total 90 > 85 left
        ("scout", "agents", 1 * MiB, None),  # 91 > 85
        ("scout", "model", 6 * MiB, "model:a"),  # inconsistent with the reserved key
    ]
    with pytest.raises(BudgetError) as info:
        budget.plan(requests, hints={"patrol": "reduce group 'patrol' count to at most 750"})
    message = str(info.value)
    lines = message.splitlines()
    offending = [line for line in lines if line.startswith("  request ")]
    assert [line.split(":")[0] for line in offending] == [
        "  request 5", "  request 6", "  request 7"
    ]
    # Each offender by owner, for callers that know where the owner is configured.
    assert [owner for owner, _ in info.value.offenders] == ["patrol", "scout", "scout"]
    assert info.value.offenders[0][1] == (
        "history 20.0 MiB brings the total to 90.0 MiB, over the 85.0 MiB left"
    )
    assert info.value.summary.endswith("lower agent counts or history capacities, remove groups, "
                                       "or choose a profile with a larger budget")
    expected = "'patrol' history 20.0 MiB brings the total to 90.0 MiB, over the 85.0 MiB left"
    assert expected in offending[0]
    assert "shared key 'model:a', which is model of 5.0 MiB elsewhere" in offending[2]
    assert "needs 91.0 MiB (95,420,416 bytes) and 85.0 MiB (89,128,960 bytes) is left" in lines[0]
    assert "profile 'pi3'" in lines[0]
    assert "short by 6.0 MiB" in lines[0]
    assert lines[-1].startswith("To fit: reduce group 'patrol' count to at most 750; lower agent")
    assert budget.used == 15 * MiB  # plan reserves nothing


def test_plan_that_fits_reserves_nothing() -> None:
    budget = MemoryBudget(100 * MiB)
    budget.plan(
        [
            ("grid", "model", 60 * MiB, "model:a"),
            ("patrol", "model", 60 * MiB, "model:a"),  # shared: the plan fits only if counted once
            ("grid", "history", 40 * MiB, None),
        ]
    )
    assert budget.used == 0
    assert budget.report()["reservations"] == 0


def test_plan_rejects_malformed_lines() -> None:
    budget = MemoryBudget(100 * MiB)
    with pytest.raises(InputError, match="plan line 2: expected"):
        budget.plan([("a", "model", 1, None), ("b", "model", 1)])  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"plan line 1 \('a' model\) must be >= 0 bytes"):
        budget.plan([("a", "model", -1, None)])


def test_report_is_json_able_and_sums_add_up() -> None:
    budget = MemoryBudget(
        256 * MiB, soft_limit_bytes=200 * MiB, base_bytes=48 * MiB, profile_name="pi-zero-2w"
    )
    budget.reserve("grid", "model", 3 * MiB, shared_key="m")
    budget.reserve("patrol", "model", 3 * MiB, shared_key="m")
    budget.reserve("grid", "history", 7 * MiB)
    budget.reserve("patrol", "scratch", 2 * MiB)
    report = json.loads(json.dumps(budget.report()))
    assert report == {
        "profile": "pi-zero-2w",
        "total_bytes": 256 * MiB,
        "used_bytes": 60 * MiB,
        "available_bytes": 196 * MiB,
        "base_bytes": 48 * MiB,
        "soft_limit_bytes": 200 * MiB,
        "reservations": 4,
        "by_owner": {"daemon": 48 * MiB, "grid": 10 * MiB, "patrol": 2 * MiB},
        "by_kind": {"base": 48 * MiB, "history": 7 * MiB, "scratch": 2 * MiB, "model": 3 * MiB},
        "shared": {"m": {"kind": "model", "nbytes": 3 * MiB, "holders": ["grid", "patrol"]}},
    }
    assert sum(report["by_owner"].values()) == sum(report["by_kind"].values()) == budget.used


def test_concurrent_reserve_and_release_keep_exact_accounting() -> None:
    budget = MemoryBudget(1000 * MiB)

    def churn(owner: str) -> None:
        for i in range(300):
            r = budget.reserve(owner, "scratch", 1024 + i)
            s = budget.reserve(owner, "model", 4096, shared_key="shared")
            r.resize(2048)
            r.release()
            s.release()

    threads = [threading.Thread(target=churn, args=(f"g{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.used == 0
    assert budget.report()["reservations"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"total_bytes": 0}, InputError, "total_bytes must be positive"),
        ({"total_bytes": -5}, InputError, "total_bytes must be >= 0 bytes"),
        ({"total_bytes": 1.5}, InputError, "total_bytes must be an integer"),
        ({"total_bytes": True}, InputError, "total_bytes must be an integer"),
        ({"total_bytes": 10, "base_bytes": 11}, BudgetError, "alone exceeds the 10 B"),
        ({"total_bytes": 10, "soft_limit_bytes": 11}, InputError, "soft_limit_bytes must be in"),
        ({"total_bytes": 10, "soft_limit_bytes": 0}, InputError, "soft_limit_bytes must be in"),
        ({"total_bytes": 10, "profile_name": ""}, InputError, "profile_name must be a non-empty"),
    ],
)
def test_bad_budget_arguments_are_refused(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        MemoryBudget(**kwargs)  # type: ignore[arg-type]


def test_bad_reserve_arguments_are_refused() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(InputError, match="owner must be a non-empty string"):
        budget.reserve("", "model", 1)
    with pytest.raises(InputError, match="bytes reserved for 'g' model must be >= 0"):
        budget.reserve("g", "model", -1)
    with pytest.raises(InputError, match="must be an integer number of bytes"):
        budget.reserve("g", "model", 1.0)  # type: ignore[arg-type]
    budget.reserve("g", "model", np.int64(7))  # type: ignore[arg-type]
    assert budget.used == 7


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1_048_575, "1.0 MiB"),  # 1023.999 KiB rounds up into the next unit
        (int(1.5 * MiB), "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2048 * 1024**5, "2048.0 PiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_rss_sampler_reads_this_process() -> None:
    fresh = RssSampler()
    assert (fresh.last, fresh.peak) == (None, 0)
    sampler = RssSampler()
    first = sampler.sample()
    assert sampler.last == first
    assert 1 * MiB < first < 64 * 1024 * MiB
    big = np.ones(64 * MiB // 8)  # touched pages: RSS grows by about 64 MiB
    grown = sampler.sample()
    assert grown > first + 32 * MiB
    del big
    after = sampler.sample()
    assert sampler.peak >= grown
    assert sampler.peak >= after
    assert sampler.last == after


class _FakeMemoryInfo:
    def __init__(self, rss: int) -> None:
        self.rss = rss


class _FakeProcess:
    pid = 4242

    def __init__(self, values: list[int]) -> None:
        self.values = values

    def memory_info(self) -> _FakeMemoryInfo:
        if not self.values:
            raise psutil.NoSuchProcess(self.pid)
        return _FakeMemoryInfo(self.values.pop(0))


def test_rss_peak_is_monotone_and_soft_limit_uses_the_last_sample() -> None:
    sampler = RssSampler(_FakeProcess([100, 300, 200, 250]))
    budget = MemoryBudget(1000, soft_limit_bytes=220)
    assert sampler.over_soft_limit(budget) is False  # no sample yet: takes one (100)
    peaks = []
    for _ in range(3):
        sampler.sample()
        peaks.append(sampler.peak)
    assert peaks == [300, 300, 300]
    assert sampler.last == 250
    assert sampler.over_soft_limit(budget) is True  # 250 > 220, without sampling again
    with pytest.raises(EdgeAgentError, match="cannot read the RSS of pid 4242"):
        sampler.sample()
    assert (sampler.last, sampler.peak) == (250, 300)


def test_rss_of_this_process_is_over_a_tiny_soft_limit_only() -> None:
    sampler = RssSampler()
    assert sampler.over_soft_limit(MemoryBudget(1 * MiB))
    assert not sampler.over_soft_limit(MemoryBudget(1024 * 1024 * MiB))
