"""What each of the daemon's numbers means, and the ones Prometheus names otherwise.

One table per reader of the metrics registry (:mod:`edge_agent.service.metrics`), keyed like the
reader's keys: a HELP text, or an :class:`~edge_agent.service.metrics.Export` where the key is
renamed, scaled to a base unit, labelled or left out of the Prometheus file (it stays in the
status file and telemetry under its key). ``docs/deployment.md`` lists the resulting names. What
a kind of group reports beyond every group's numbers (planning, learning) its kind describes
(:class:`~edge_agent.core.contract.MetricFamily`, :mod:`edge_agent.kinds.aif`).
"""

from __future__ import annotations

from typing import Final

from edge_agent.service.metrics import Export

Described = dict[str, str | Export]

DAEMON: Final[Described] = {
    "started_at": Export(
        "start_time_seconds", "When the daemon started, in seconds since the Unix epoch."
    ),
    # time() - edge_agent_start_time_seconds; a counter of seconds would only repeat it.
    "uptime_s": Export(None),
    "rss_bytes": "Resident memory of the daemon's process in bytes, sampled every second.",
    "rss_peak_bytes": "Highest resident memory of the daemon's process since it started, bytes.",
    "budget_used_bytes": "Memory reserved in the budget by the daemon's base, its models and "
    "agents, bytes.",
    "budget_total_bytes": "The firmware profile's memory budget (memory_budget_mb + base_mb), "
    "bytes.",
    "agents": "Agents in all groups.",
    "groups": "Agent groups configured.",
    "paused_groups": "Groups paused by memory degradation or thermal protection.",
    "cpu_temp_c": "Temperature of the hottest thermal zone in degrees Celsius (absent without "
    "a sensor).",
    "throttled": "1 while the tick rate is lowered because the CPU is at the profile's throttle_c.",
    "thermal_critical": "1 while every group is paused because the CPU is at the profile's "
    "critical_c.",
    "reloads_ok": "SIGHUP reloads applied.",
    "reloads_refused": "SIGHUP reloads refused; the old config kept running.",
}

#: The summary ``edge_agent_tick_duration_seconds`` (quantiles of the recent ticks).
TICK_DURATION: Final = (
    "How long a tick took in seconds: median and 99th percentile of the last 1024 ticks; sum "
    "and count since start."
)
TICK: Final[Described] = {
    "hz": Export(
        "tick_rate_hertz",
        "The tick rate in force: the configured rate, lowered while thermally throttled.",
    ),
    "ticks": "Ticks completed.",
    "overruns": "Ticks that ended after their deadline.",
    "missed": "Tick deadlines skipped because the loop was behind.",
    # Both are quantiles of the summary edge_agent_tick_duration_seconds (TICK_DURATION).
    "p50_ms": Export(None),
    "p99_ms": Export(None),
}

SNAPSHOTS: Final[Described] = {
    "writes": "Snapshots of the agents' state written.",
    "write_errors": "Snapshot writes that failed.",
    "skipped_by_rate_limit": "Snapshots not written because max_snapshot_writes_per_hour was "
    "reached (SD-card wear).",
    "bytes_written_total": "Bytes of snapshots written.",
    "last_write_time": Export(
        "snapshots_last_write_timestamp_seconds",
        "When the last snapshot was written, in seconds since the Unix epoch.",
    ),
    "last_write_bytes": "Size of the last snapshot in bytes.",
    "last_duration_s": "How long writing the last snapshot took, seconds.",
    "last_seq": "Sequence number of the last snapshot.",
    "writes_in_last_hour": "Snapshots written in the last hour.",
    "max_writes_per_hour": "The profile's limit of snapshot writes per hour.",
    "temp_files_removed": "Half-written snapshot files of an earlier run removed at start.",
    "corrupt_found": "Snapshots found damaged and passed over at start.",
}

SYSTEMD: Final[Described] = {
    "enabled": "1 when the daemon runs under systemd with a notify socket.",
    "sent": "sd_notify messages sent (READY, STATUS, WATCHDOG, ...).",
    "send_errors": "sd_notify messages that could not be sent.",
}

STATE: Final[Described] = {
    "moved_aside": "Damaged state files moved aside and started fresh, by part.",
    "storage_errors": "Writes of state that the storage refused (a full disk), by part.",
    "storage_failing": "Parts of the state whose last write failed.",
    "notices_dropped": "State notices dropped because too many waited to be reported.",
}
#: ``moved_aside.PART`` -> ``edge_agent_state_moved_aside_total{part="PART"}``.
STATE_PARTS: Final = {"moved_aside": "part", "storage_errors": "part"}

IO: Final[Described] = {
    "obs_rows": "Observation rows taken from MQTT sources.",
    "rows_rejected": "Observation rows rejected (agent out of range, bad values).",
    "batches_rejected": "Observation batches rejected whole (wrong shape, wrong group).",
    "stale_agent_ticks": "Agent-ticks run on an observation older than the last tick.",
    "subscriptions_refused": "Subscriptions to MQTT sources' filters the broker refused.",
}

DEPLOY: Final[Described] = {
    "started": "Bundle deployments started.",
    "resumed": "Bundle transfers resumed after a restart or a repeated command.",
    "chunks": "Bundle chunks received and kept.",
    "chunk_bytes": "Bytes of bundle chunks received and kept.",
    "chunks_rejected": "Bundle chunks rejected (hash, size or index wrong).",
    "chunks_duplicate": "Bundle chunks received again.",
    "chunks_broadcast": "Bundle chunks taken from the fleet's broadcast topic.",
    "chunks_ignored": "Broadcast chunks of a bundle this node is not receiving.",
    "done": "Deployments completed.",
    "failed": "Deployments that failed.",
    "rolled_back": "Deployments rolled back after their preflight or watch.",
    "discarded": "Deployments discarded (superseded or abandoned).",
}

COMMANDS: Final[Described] = {
    "received": "Hub commands received.",
    "dropped": "Hub commands dropped because the queue of pending commands was full.",
    "ok": "Hub commands answered ok.",
    "accepted": "Hub commands accepted to finish later (a deployment).",
    "failed": "Hub commands that failed.",
    "busy": "Hub commands answered busy.",
    "refused": "Hub commands refused, by code.",
    "unsigned": "Hub commands without a signature.",
    "errors": "Hub commands whose handler raised.",
    "pending": "Hub commands waiting to be applied.",
    "nonces": "Command nonces remembered against replay.",
}
#: ``refused.CODE`` -> ``edge_agent_commands_refused_total{code="CODE"}``.
COMMAND_PARTS: Final = {"refused": "code"}

FLEET: Final[Described] = {
    "events_published": "Events published to the hub.",
    "events_suppressed": "Repeated events not published (rate limit per kind).",
    "events_lost": "Events the outbox could not take.",
    "results_published": "Command results published.",
    "health_published": "Health messages published (each group's health per window, "
    "docs/health.md).",
    "learning_published": "Learning deltas put in the outbox (what the groups learned, "
    "docs/fleet-learning.md).",
    "learning_lost": "Learning deltas the outbox refused (their increments are not sent).",
    "publish_refused": "Telemetry, events or results the outbox refused.",
    "actions_refused": "Action batches the outbox refused.",
    "obs_unrouted": "Observations on this node's topic for no group.",
    "io_refused": "Subscriptions to MQTT sources' filters and action batches on MQTT sinks' "
    "topics the broker refused (its ACL; MQTT 5 reason code >= 0x80).",
    "messages_ignored": "Messages received that this node does not act on.",
    "errors": "Fleet work that raised (logged at most once a minute).",
    "published_unstored": "Messages published directly without the durable outbox.",
    "refusals_screened": "Commands refused on arrival (wrong target, key or signature).",
    "refusals_answered": "Refused commands answered to the hub.",
    "refusals_unanswered": "Refused commands not answered (answer rate limit).",
    "refusals_logged_summaries": "Log lines summarising refused commands.",
}

GROUP: Final[dict[str, str]] = {
    "agents": "Agents in the group.",
    "steps": "Batched steps of the group.",
    "paused": "1 while the group is paused.",
    "bytes_per_agent": "Memory of one agent of the group in bytes (state and history).",
}

POWER: Final[Described] = {
    "under_voltage": "1 while the Raspberry Pi's supply is below 4.63 V (firmware flag, bit 0).",
    "freq_capped": "1 while the firmware caps the ARM frequency (bit 1).",
    "throttled": "1 while the firmware throttles the CPU (bit 2).",
    "soft_temp_limit": "1 while the firmware's soft temperature limit is active (bit 3).",
    "under_voltage_occurred": "1 once under-voltage has occurred since boot (bit 16).",
    "freq_capped_occurred": "1 once ARM frequency capping has occurred since boot (bit 17).",
    "throttled_occurred": "1 once throttling has occurred since boot (bit 18).",
    "soft_temp_limit_occurred": "1 once the soft temperature limit has been reached since boot "
    "(bit 19).",
    "raw": Export(
        "power_firmware_flags",
        "The firmware's flags as one number, what vcgencmd get_throttled prints in hex.",
    ),
}

#: The groups' health families (labels ``group`` and ``measure``; docs/health.md).
HEALTH: Final[dict[str, str]] = {
    "mean": "A group's health measure over its last reporting window (the telemetry interval), "
    "mean over the agent-steps sampled (docs/health.md: unit and better direction per measure).",
    "p95": "A group's health measure over its last reporting window, 95th percentile of the "
    "agent-steps sampled (a uniform sample of at most 512 of them).",
    "samples": "Values a group's health measure summarised over its last reporting window.",
    "z": "A group's health measure's mean over its last window in standard errors from 0 (the "
    "excess surprise's calibration signal: near 0 while the model fits).",
    "agent_steps": "Agent-steps a group took in its last health reporting window.",
    "drift_alarm": "1 while a group's drift alarm on its excess surprise is raised.",
    "drift_statistic": "A group's drift statistic (Page-Hinkley with the mean 0 known) on its "
    "excess surprise; the alarm fires above the threshold.",
    "drift_threshold": "The drift statistic above which a group's drift alarm fires.",
}
