"""Every benchmark runs, in its ``--smoke`` mode: the real code path at tiny sizes.

``benchmarks/bench_hub_scale.py`` was once broken for two days without any check noticing, so
each ``benchmarks/bench_*.py`` runs here as ``python benchmarks/bench_X.py --smoke`` from the
repository root: it must exit 0, print only well-formed JSON objects on its lines that
start with ``{``, and print the records below with their keys (values are not judged: a smoke
run's numbers mean nothing; docs/performance.md shows the real ones, stored in
benchmarks/results/). The benchmarks that need a broker start their own mosquitto
(tests/support/broker.py), as they do in a real run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]

Record = tuple[dict[str, Any], tuple[str, ...]]
#: script -> the records its smoke run prints: (what identifies the record, keys it must have).
EXPECTED: dict[str, list[Record]] = {
    "bench_convert.py": [
        ({"family": "mlp"}, ("ours_bytes", "ours_top1", "ours_mode", "ort_static_top1")),
        ({"family": "cnn"}, ("ours_bytes", "ours_top1", "label_accuracy")),
        ({"family": "gru"}, ("ours_bytes", "ort_static_top1", "ort_dynamic_top1")),
        *[({"bench": "table", "family": "logreg-wine", "method": method},
           ("ours_mode", "ours_bundled", "ours_ratio", "ours_label_accuracy",
            "label_accuracy_float"))
          for method in ("auto", "static-minmax", "static-entropy", "static-percentile",
                         "dynamic")],
    ],
    "bench_coordination.py": [
        ({"bench": "allocation"}, ("agreed_after_announce_s", "messages_per_task", "bytes")),
        ({"bench": "partition_heal"}, ("resolved_after_heal_s", "conflicts_resolved")),
        ({"bench": "belief_sharing"}, ("steps_to_95_median", "wire_bytes_per_agent_s")),
        ({"bench": "coordination_efficiency"}, ("efficiency_no_coordination", "steady_efficiency")),
    ],
    "bench_coordination_daemons.py": [
        ({"bench": "allocation_daemons", "daemons": 2},
         ("agreed_after_announce_s", "final_before_own_window_closed", "messages_until_agreed")),
        ({"bench": "allocation_daemons_idle"}, ("messages_per_s", "bytes_per_s")),
        ({"bench": "belief_bandwidth_daemons"},
         ("wire_bytes_per_agent_s", "reported_bytes_per_agent_s_mean", "steps_per_daemon")),
    ],
    "bench_coordination_teams.py": [
        ({"bench": "team_formation", "daemons": 2},
         ("agreed_after_announce_s", "held_seen_after_announce_s", "messages_per_agent",
          "bytes_per_agent", "teams_formed", "formation_cpu_s_max", "one_core_estimate_s")),
        ({"bench": "team_formation_cpu", "nodes": 2},
         ("cpu_s_per_node_mean", "cpu_s_per_node_max", "single_cpu_s_per_node_mean",
          "teams_over_single")),
        ({"bench": "team_repair", "daemons": 2},
         ("agreed_after_kill_s", "bound_s", "others_kept_their_slots", "repairs")),
        ({"bench": "team_quality"},
         ("award_efficiency_min", "greedy_efficiency_min", "all_teams_formed")),
        ({"bench": "single_quality"}, ("greedy_efficiency_min", "greedy_efficiency_median")),
        ({"bench": "team_outcome"},
         ("award_teams_complete", "greedy_teams_complete", "award_team_steps_mean")),
    ],
    "bench_core.py": [
        ({"workload": "machine"}, ("cpus", "seconds")),
        *[({"workload": w, "policy_len": p, "N": 10},
           ("agent_steps_per_s", "step_ms_p50", "bytes_per_agent", "ratio_vs_reference"))
          for w, p in (("grid10", 1), ("grid10", 2), ("tmaze", 1), ("explorer", 3))],
        ({"workload": "import"}, ("rss_mb_import_edge_agent", "met")),
    ],
    "bench_daemon.py": [
        ({"bench": "baseline"}, ("python_import_numpy_s",)),
        ({"bench": "daemon", "tmaze_agents": 20},
         ("ready_s", "rss_mb", "tick_p50_ms", "snapshot_bytes", "ready_vs_baseline")),
        *[({"bench": "daemon-learning", "world": w, "learning": what, "agents": 20},
           ("plain_agent_steps_per_s", "learning_agent_steps_per_s", "ratio",
            "learning_updates"))
          for w, what in (("tmaze-reversal", "A1 refresh 3"), ("tmaze-reversal", "A1 refresh 100"),
                          ("grid-slippery", "A0 refresh 100"))],
    ],
    "bench_fleet.py": [
        ({"bench": "outbox_throughput", "mode": "bulk"}, ("msgs_per_s", "ratio_to_baseline")),
        ({"bench": "outbox_throughput", "mode": "per_tick"}, ("msgs_per_s", "ratio_to_baseline")),
        ({"bench": "write_amplification"}, ("amplification", "outbox_files_bytes_at_end")),
        ({"bench": "command_latency", "clients_tcp_nodelay": False}, ("p50_ms", "p99_ms")),
        ({"bench": "command_latency", "clients_tcp_nodelay": True}, ("p50_ms", "p99_ms")),
        *[({"bench": "reconnect", "case": case}, ("median_s", "max_s"))
          for case in ("daemon_default_backoff/back_to_back", "daemon_default_backoff/isolated",
                       "short_backoff/back_to_back")],
    ],
    "bench_health.py": [
        *[({"bench": "health-cost", "world": w, "n": 20},
           ("plain_ms", "health_ms", "ratio", "measured_agents", "every_ticks"))
          for w in ("tmaze", "grid10")],
        *[({"bench": "health-cost-small", "world": w, "learning": k, "n": 1},
           ("plain_us", "held_us", "each_us", "held_ratio", "each_ratio", "held_vs_each"))
          for w, kinds in (("tmaze", ("frozen", "pA")), ("grid10", ("frozen", "pA", "pB")))
          for k in kinds],
        *[({"bench": "drift-false-alarms", "world": w},
           ("alarms", "updates", "alarms_per_100k_updates", "threshold"))
          for w in ("tmaze", "grid10")],
        ({"bench": "drift-delay"}, ("delays_ticks", "median_delay_ticks", "alarms_before")),
        *[({"bench": "shadow-cost", "world": w, "n": 20, "candidate": c},
           ("live_ms", "shadow_ms", "ratio", "shadow_bytes_per_agent", "shadow_model_bytes"))
          for w in ("tmaze", "grid10") for c in ("worse", "close")],
        *[({"bench": "shadow-power", "world": w, "candidate": c, "test": t},
           ("expected", "correct", "mean_diff", "threshold"))
          for w in ("tmaze",) for c in ("worse", "same", "close")
          for t in ("paired", "unpaired")],
    ],
    "bench_hub_page.py": [
        ({"bench": "setup", "nodes": 20}, ("procs",)),
        ({"bench": "fleet"}, ("halted", "counts")),
        ({"bench": "api"}, ("first_page", "every_node", "sorted_by_cpu", "failed_only")),
        ({"bench": "render"}, ("first_page", "all_rows", "browser")),
        ({"bench": "hub"}, ("hub_rss_peak_mb",)),
    ],
    "bench_export_model.py": [
        *[({"bench": "export-model", "case": c},
           ("export_s", "snapshot_save_s", "ratio", "npz_bytes", "snapshot_bytes"))
          for c in ("tmaze", "grid10")],
    ],
    "bench_flood.py": [
        ({"bench": "flood_latency"},
         ("unflooded_p50_ms", "flooded_p50_ms", "ratio_p50", "flooded_unanswered")),
    ],
    "bench_hub_faults.py": [
        ({"bench": "machine"}, ("cpus",)),
        ({"bench": "idle_http"}, ("idle_clients", "ratio", "connections")),
        ({"bench": "hung_db"}, ("degraded_after_s", "watchdog_max_gap_s", "lost")),
    ],
    "bench_hub_health.py": [
        ({"bench": "setup", "nodes": 20}, ("procs", "telemetry_s")),
        ({"bench": "health_telemetry", "health": False}, ("bytes_per_node_hour", "hub_cpu_cores")),
        ({"bench": "health_telemetry", "health": True}, ("bytes_per_node_hour", "hub_rss_mb")),
        ({"bench": "health_cost"}, ("bytes_ratio", "hub_cpu_ratio", "health_bytes_per_node_hour")),
        ({"bench": "gate"}, ("verdict_ms", "wave_samples", "control_samples")),
    ],
    "bench_hub_scale.py": [
        ({"bench": "setup", "nodes": 20}, ("bundle_bytes",)),
        ({"bench": "registry"}, ("first_s", "after_restart_s", "hub_rss_peak_mb")),
        ({"bench": "rollout", "state": "done"}, ("wall_s", "broker_bytes_sent", "ok")),
        ({"bench": "halt"}, ("state", "halted_in_wave", "nodes_beyond_first_wave_touched")),
        ({"bench": "http"}, ("metrics_ms", "healthz_ms", "fleet_json_bytes")),
    ],
    "bench_learning.py": [
        *[({"bench": "learning", "world": w, "tables": t, "agents": 20, "refresh_every": e},
           ("plain_agent_steps_per_s", "learning_agent_steps_per_s", "ratio", "refresh_ms"))
          for w, t, e in (("tmaze", ["A1"], 10), ("grid10", ["A0"], 10),
                          ("grid10", ["A0", "B0"], 10), ("tmaze", ["A1"], 1),
                          ("grid10", ["B0"], 1))],
        ({"bench": "learning", "world": "grid10", "tables": ["B0"], "prior": "reach",
          "agents": 20, "refresh_every": 1},
         ("plain_agent_steps_per_s", "learning_agent_steps_per_s", "ratio", "refresh_ms")),
    ],
    "bench_learning_deltas.py": [
        *[({"bench": "learning-deltas", "world": w, "scope": s, "agents": 10},
           ("bytes_per_report", "bytes_per_hour", "bound_bytes_per_hour", "take_ms"))
          for w in ("tmaze", "grid10") for s in ("shared", "per_agent")],
    ],
    "bench_learning_planning.py": [
        *[({"bench": "learning_planning", "world": w, "policy": p, "N": 20},
           ("agent_steps_per_s", "duty_cycle", "score", "score_ratio", "speedup", "updates"))
          for w in ("tmaze-reversal", "grid-slippery")
          for p in ("every_tick", "every_4", "change_0.1_every_4")],
    ],
    "bench_learning_fleet.py": [
        ({"bench": "setup", "database": "postgresql"}, ("experience", "bundle_bytes")),
        ({"bench": "fleet_up", "nodes": 6}, ("seconds", "hub_rss_peak_mb")),
        *[({"bench": "round", "nodes": n, "state": "built", "merged_nodes": n, "refused": 0},
           ("deltas_per_s", "heard_last_s", "broker_bytes_received", "read_s", "merge_s", "round_s",
            "hub_rss_peak_mb", "db_bytes_added"))
          for n in (3, 6)],
        ({"bench": "extrapolated", "nodes": 100, "measured": False},
         ("merge_s", "round_s", "hub_rss_peak_mb", "broker_bytes_received")),
    ],
    "bench_learning_merge.py": [
        ({"bench": "setup", "table": "grid10 B0"}, ("bytes_per_delta", "columns_per_delta")),
        *[({"bench": "ingest", "nodes": n}, ("deltas_per_s", "telemetry_per_s", "ratio"))
          for n in (5, 10)],
        *[({"bench": "merge", "nodes": n},
           ("read_s", "merge_s", "peak_mb", "held_mb", "round_bytes", "dense_merge_s",
            "speedup", "memory_ratio", "equal"))
          for n in (5, 10)],
        ({"bench": "extrapolated", "nodes": 100}, ("merge_s", "peak_mb", "round_bytes")),
        ({"bench": "merge", "nodes": 100, "read": "in memory"}, ("merge_s", "peak_mb", "held_mb")),
    ],
    "bench_learning_peers.py": [
        *[({"bench": "learning-peers", "world": w, "n": 20, "impl": i, "loop": "open"},
           ("steps_per_s", "state_bytes_per_agent"))
          for w in ("tmaze", "grid10")
          for i in ("edge-agent int8 refresh 1", "edge-agent int8 refresh 100",
                    "edge-agent float64 per-agent", "edge-agent float64 learning off")],
        *[({"bench": "learning-peers", "world": w, "n": 20, "impl": i, "loop": "closed"},
           ("steps_per_s", score, "achieved_ticks", "world_step_timed", "pinned_cpu"))
          for w, score in (("tmaze", "mean_reward"), ("grid10", "reach_rate"))
          for i in ("edge-agent float64 per-agent", "edge-agent float64 learning off")],
        # The T-maze's pA and grid10's pB: the per-agent group in the compiled pass, beside it
        # kept on numpy; the float64 shared group in the compiled pass too (pA and pB).
        *[({"bench": "learning-peers", "world": w, "n": 20, "loop": "open",
            "impl": "edge-agent float64 per-agent", "stepping": "native"},
           ("steps_per_s", "state_bytes_per_agent", "vs_numpy")) for w in ("tmaze", "grid10")],
        ({"bench": "learning-peers", "world": "tmaze", "n": 20, "loop": "open",
          "impl": "edge-agent float64 per-agent numpy",
          "stepping": "numpy: EDGE_AGENT_NATIVE_TICK=0"},
         ("steps_per_s", "state_bytes_per_agent", "vs_learning_off")),
        ({"bench": "learning-peers", "world": "tmaze", "n": 20, "loop": "open",
          "impl": "edge-agent float64 shared refresh 1", "stepping": "native"},
         ("steps_per_s", "vs_int8_refresh_1", "vs_learning_off")),
        ({"bench": "learning-peers", "world": "grid10", "n": 20, "loop": "open",
          "impl": "edge-agent float64 shared refresh 1", "stepping": "native"},
         ("steps_per_s", "vs_int8_refresh_1", "vs_learning_off")),
        ({"bench": "learning-peers", "world": "tmaze", "n": 20, "loop": "closed",
          "impl": "edge-agent float64 per-agent numpy"},
         ("steps_per_s", "mean_reward", "achieved_ticks", "world_step_timed")),
        # --frozen: nobody learns; the int8 group says what steps it
        *[({"bench": "learning-peers", "world": w, "n": 20, "impl": i, "loop": "closed",
            "learned": "none"}, ("steps_per_s", "stepping", score, "world_step_timed"))
          for w, score in (("tmaze", "mean_reward"), ("grid10", "reach_rate"))
          for i in ("edge-agent int8 learning off", "edge-agent float64 learning off")],
        ({"bench": "learning-peers", "world": "tmaze", "n": 20, "loop": "closed",
          "learned": "none", "impl": "edge-agent int8 learning off"}, ("vs_float64",)),
        # --policy-len 1,2: each frozen row says its policy length and how its agents plan,
        # alike on every row of its case, and what steps it (two-step policies too: the
        # compiled tick plans them, or numpy where measured faster)
        *[({"bench": "learning-peers", "world": w, "n": 20, "loop": "closed", "learned": "none",
            "policy_len": p, "impl": i, "same_planning": True},
           ("steps_per_s", "cpu_steps_per_s", "planning", "stepping", score))
          for w, score in (("tmaze", "mean_reward"), ("grid10", "reach_rate"))
          for p in (1, 2)
          for i in ("edge-agent int8 learning off", "edge-agent float64 learning off")],
        *[({"bench": "learning-peers", "world": w, "n": 20, "loop": "closed", "learned": "none",
            "policy_len": 2, "impl": "edge-agent int8 learning off"},
           ("vs_float64", "stepping")) for w in ("tmaze", "grid10")],
        *[({"bench": "learning-reversal", "condition": c}, ("mean_reward_rate", "ticks_to_relearn"))
          for c in ("frozen", "learning", "forgetting")],
    ],
    "bench_limits.py": [
        ({"bench": "machine"}, ("copy_gb_s", "elementwise_gflop_s", "sgemm_gflop_s")),
        ({"bench": "arithmetic", "workload": "grid10"}, ("sparse_flop", "dense_flop")),
        ({"bench": "bound", "workload": "tmaze"}, ("of_bound", "measured_agent_steps_per_s")),
    ],
    "bench_memory.py": [
        ({"bench": "memory", "mqtt": "off", "venv": "this"},
         ("rss_mb", "anon_mb", "file_mb", "by_mapping", "pydantic_mapped")),
        ({"bench": "memory", "mqtt": "on"}, ("rss_mb", "by_mapping")),
        ({"bench": "memory_summary", "mqtt": "on"}, ("this_rss_mb", "target_mb", "met")),
        *[({"bench": "memory_parts", "mqtt": m},
           ("numpy_added_mb", "modules_added_mb", "groups_added_mb", "scratch_bytes"))
          for m in ("off", "on")],
    ],
    "bench_million.py": [
        ({"bench": "million", "policy": "every_4"},
         ("pss_peak_mb", "pss_steady_mb", "rss_peak_mb", "hz", "capacity_hz", "bytes_per_agent",
          "score")),
    ],
    "bench_neural.py": [
        *[({"bench": "neural", "backend": b, "variant": v}, ("agent_steps_per_s", "size_bytes"))
          for b in ("onnxruntime", "litert") for v in ("float", "int8")],
        ({"bench": "neural", "variant": "int8"}, ("top1_agreement", "size_ratio")),
    ],
    "bench_neural_daemon.py": [
        ({"bench": "machine"}, ("onnxruntime",)),
        ({"bench": "convert"}, ("int8_bytes", "convert_s")),
        *[({"bench": "daemon", "config": c}, ("tick_p50_ms", "rss_mb"))
          for c in ("grid10", "neural", "perception")],
        ({"bench": "daemon", "config": "neural"}, ("tick_p50_vs_grid10", "rss_vs_grid10")),
        *[({"bench": "overhead", "kind": k},
           ("backend_run_ms", "backend_run_ratio", "neural_step_ratio", "model"))
          for k in ("neural", "perception")],
        ({"bench": "rss_breakdown"}, ("numpy_mb", "daemon_modules_mb")),
    ],
    "bench_neural_coupling.py": [
        *[({"bench": "neural_coupling", "model": m, "variant": v},
           ("changed_x100", "changed_x300", "changed_x1000", "accuracy_lost_x1000",
            "alone_max_abs_diff", "twice_changed", "tick_ms", "tick_ratio", "model_bytes"))
          for m in ("sensor-policy", "digits-mlp")
          for v in ("before", "static", "dynamic", "float")],
    ],
    "bench_neural_digits.py": [
        *[({"bench": "digits_group", "model": m},
           ("group_step_ratio", "session_exact_ratio", "x64_quant_precision",
            "session_spinning_ratio", "session_spinning_stop_ratio", "session_backend_ratio",
            "group_step_spinning_ratio", "group_spinning_actions_optimal",
            "group_step_spinning_fresh_ratio", "group_job_ratio", "session_default_job_ms"))
          for m in ("mlp", "cnn")],
        *[({"bench": "spinning", "model": m, "session": k},
           ("cpu_ms_per_call", "cpu_share_of_core", "call_p50_ms"))
          for m in ("mlp", "cnn")
          for k in ("backend_1", "backend_2", "spinning_2", "spinning_stop_2")],
    ],
    "bench_planning.py": [
        ({"bench": "machine"}, ("cpus", "agents", "steps")),
        ({"bench": "deadline"}, ("fits_every_tick", "tick_ms_p99", "ticks_over_period")),
        ({"bench": "daemon_every_tick"}, ("fits", "overruns", "missed", "tick_p99_ms")),
        ({"bench": "daemon_deadline"},
         ("fits_every_tick", "overruns", "missed", "tick_p99_ms", "duty_cycle", "met",
          "daemon_cpu_per_wall", "load1_before")),
        *[({"bench": "planning", "world": w, "policy": p},
           ("cpu_agent_steps_per_s", "duty_cycle", "score", "score_ratio", "speedup"))
          for w in ("grid10", "tmaze", "explorer", "tmaze-reversal", "grid-slippery")
          for p in ("every_tick", "change_0.1_every_4", "max_50pct", "surprise_0.5_every_4")],
        *[({"bench": "trigger", "world": "tmaze", "trigger": t}, ("duty_cycle", "score_ratio"))
          for t in ("belief_change", "surprise")],
        ({"bench": "triggers_at_equal_duty", "world": "tmaze"}, ("duty_range",)),
    ],
    "bench_peers.py": [
        *[({"bench": "peers", "workload": w, "impl": i}, ("steps_per_s", "digest"))
          for w in ("grid10", "grid2f") for i in ("edge-agent int8", "edge-agent float64")],
        ({"bench": "peers", "workload": "done"}, ("seconds",)),
    ],
    "bench_tricks.py": [
        ({"bench": "tricks", "trick": "msgspec"}, ("mb", "runs_mb", "modules", "at_least_1pct")),
    ],
    "bench_validators.py": [
        ({"bench": "validators", "library": "pydantic"}, ("import_mb", "models_mb", "total_mb")),
        ({"bench": "validators", "library": "msgspec"}, ("import_mb", "models_mb", "total_mb")),
        ({"bench": "validators"}, ("pydantic_over_msgspec",)),
    ],
    "bench_workers.py": [
        *[({"bench": "workers", "workload": w, "workers": 2},
           ("ratio", "independent_ratio", "same_results", "workers_uss_mb"))
          for w in ("grid10", "tmaze")],
    ],
    "bench_writes.py": [
        *[({"bench": "writes", "case": c}, ("total_mb_per_h", "window_write_bytes"))
          for c in ("quiet", "telemetry", "actions_qos1", "demo")],
        ({"bench": "writes", "case": "learning_hour"},
         ("learn_bytes_per_agent", "learn_bytes_per_agent_whole", "bound_learn_bytes_per_agent",
          "learn_mb_per_h_200_agents", "bound_learn_mb_per_h_200_agents")),
    ],
}


def test_every_benchmark_has_a_smoke_run_here() -> None:
    scripts = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
    assert scripts == sorted(EXPECTED)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects a benchmark printed (its lines starting with ``{``); other lines (a
    table after them) are allowed, a malformed object is not."""
    records = []
    for number, line in enumerate(stdout.splitlines(), 1):
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AssertionError(f"line {number} is no JSON object: {err}\n{line}") from err
    return records


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_the_benchmark_runs_in_its_smoke_mode(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, f"{script} --smoke: exit {done.returncode}:\n{done.stderr[-4000:]}"
    records = json_lines(done.stdout)
    assert records, f"{script} printed no JSON line:\n{done.stdout[-2000:]}"
    for match, keys in EXPECTED[script]:
        found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
        assert found, f"{script}: no record {match} among\n" + "\n".join(map(str, records))
        missing = [k for k in keys if not any(k in r for r in found)]
        assert not missing, f"{script}: record {match} lacks {missing}: {found[0]}"


def test_the_merge_a_b_runs_small_and_finds_the_two_ledgers_equal() -> None:
    """benchmarks/ab_coordination_merge.py (the twelfth pass's A/B, not a stored benchmark) on a
    small formation: both merges timed by part, and the old and the new ledgers compared (it
    exits non-zero where they differ)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ab_coordination_merge.py"),
         "--nodes", "3", "--agents", "30", "--tasks", "5", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    records = json_lines(done.stdout)
    assert sorted(r["holders"] for r in records) == ["new", "old"], records
    for r in records:
        assert r["ticks"] > 0, r
        assert "TaskBoard.add_bids" in r["ms_per_node"], r
    assert "BoardState._new_holders" in next(r for r in records if r["holders"] == "new")[
        "ms_per_node"]


def test_the_assignment_a_b_runs_small_on_both_paths_and_finds_the_ledgers_equal() -> None:
    """benchmarks/ab_coordination_assignment.py (the thirteenth pass's A/B, not a stored
    benchmark) on a small formation: the Python search really searches in Python (its
    ``_search`` timed) and the compiled one never does, and the two ledgers are compared (it
    exits non-zero where they differ)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ab_coordination_assignment.py"),
         "--nodes", "3", "--agents", "30", "--tasks", "5", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    by_path = {r["search"]: r for r in json_lines(done.stdout)}
    assert sorted(by_path) == ["compiled", "python"], by_path
    for r in by_path.values():
        assert r["ticks"] > 0, r
        assert "Assignment.add_slots" in r["ms_per_node"], r
    assert "Assignment._search" in by_path["python"]["ms_per_node"], by_path["python"]
    assert "Assignment._search" not in by_path["compiled"]["ms_per_node"], by_path["compiled"]
