"""The hub service's TOML config: strict, frozen models and a loader that reports lines.

Five tables, every one optional: ``[hub]`` (this replica's name, state directory, logging, status),
``[mqtt]`` (the broker, the fleet, the shared-subscription group), ``[database]`` (``type =
"sqlite"`` or ``"postgresql"``), ``[queue]`` (the bounded in-memory queue in front of the
database) and ``[retention]`` (how long and how finely telemetry, events and commands are kept).
``docs/hub.md`` documents every key; ``example.toml`` beside this module is the commented example.

A bad file raises one :class:`~edge_agent.errors.ConfigError` whose lines read
``path:line: field: problem``, like the daemon's (:mod:`edge_agent.config.toml_lines`). Paths
may use ``~`` and ``${VAR}``; relative paths are resolved against the file's directory.
"""

from __future__ import annotations

import importlib
import re
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_agent.config.daemon import path_from_document
from edge_agent.config.mqtt import MqttTls
from edge_agent.config.toml_lines import Problem, TomlDocument, raise_problems, validate_toml
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.fleet.names import NAME_PATTERN
from edge_agent_host.fleet.presence import SILENT_AFTER_S
from edge_agent_host.hub.base.strict import StrictModel

__all__ = [
    "LEARNING_KEY_MISSING",
    "DatabaseSpec",
    "HubConfig",
    "HubConfigFile",
    "HubMqtt",
    "HubSection",
    "LearningSection",
    "PostgresDatabase",
    "QueueSection",
    "RetentionSection",
    "SqliteDatabase",
    "example_config_text",
    "key_id_of",
    "learning_key_problems",
    "load_hub_config",
    "parse_hub_config",
    "read_password",
]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_SHARE_GROUP = r"^$|^[A-Za-z0-9_-]{1,64}$"
_DAY = 86400.0


def _path(value: object, info: ValidationInfo, *, optional: bool) -> str | None:
    """Before-validator body of every path field (``~``, ``${VAR}``, relative to the file): the
    daemon's own, as text that the field's type then takes as a Path."""
    return path_from_document(value, info.context or {}, optional=optional)


# --------------------------------------------------------------------------------------- [hub]
class HubSection(StrictModel):
    """``[hub]``: who this replica is, where it keeps its files, how it reports."""

    id: str = Field(
        "",
        pattern=rf"^$|{NAME_PATTERN}",
        description="This replica's name (status, heartbeats, the envelope of its rebirth "
        "requests); give every replica its own. Empty: the host name.",
    )
    state_dir: Path = Field(
        Path("/var/lib/edge-agent-hub"),
        description="Directory of the status file and of the SQLite database by default.",
    )
    status_file: Path | None = Field(
        None, description="Status JSON ('edge-agent-hub status'); default {state_dir}/status.json."
    )
    status_interval_s: float = Field(
        5.0,
        ge=0.1,
        le=3600.0,
        description="How often the status file and the replica's heartbeat row are written (s).",
    )
    log_level: LogLevel = Field("info", description="Log level (stderr/journald).")
    prometheus_textfile: Path | None = Field(
        None,
        description="Write the hub's metrics to this *.prom file for node_exporter's textfile "
        "collector; default: off.",
    )
    rebirth_interval_s: float = Field(
        30.0,
        ge=1.0,
        le=86400.0,
        description="Ask a node that sends data without the hub knowing its birth for a rebirth "
        "at most this often (s).",
    )

    silent_after_s: float = Field(
        SILENT_AFTER_S,
        ge=1.0,
        le=86400.0,
        description="An online node from which nothing live came for this long is 'silent' on "
        "the fleet page, in /api/fleet.json and /metrics (a revoked node's retained state stays "
        "online); keep it above the nodes' telemetry interval (s).",
    )

    @field_validator("state_dir", mode="before")
    @classmethod
    def _required_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=False)

    @field_validator("status_file", "prometheus_textfile", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)

    @field_validator("prometheus_textfile")
    @classmethod
    def _prom_suffix(cls, path: Path | None) -> Path | None:
        if path is not None and path.suffix != ".prom":
            raise ValueError(
                f"{path}: node_exporter's textfile collector reads only files ending in .prom"
            )
        return path

    @property
    def status_path(self) -> Path:
        return self.status_file if self.status_file is not None else self.state_dir / "status.json"

    def effective_id(self) -> str:
        """``id``, or the host name reduced to what a protocol name may hold."""
        if self.id:
            return self.id
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:64]
        return host if re.fullmatch(NAME_PATTERN, host) else "hub"


# -------------------------------------------------------------------------------------- [mqtt]
class HubMqtt(StrictModel):
    """``[mqtt]``: the broker and the fleet the hub listens to."""

    host: str = Field("127.0.0.1", min_length=1, max_length=253, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    fleet: str = Field(
        "default",
        pattern=NAME_PATTERN,
        description="Fleet name, as the nodes' [mqtt] fleet: topics ea/v1/{fleet}/.",
    )
    share_group: str = Field(
        "",
        pattern=_SHARE_GROUP,
        description="MQTT 5 shared-subscription group: replicas with the same group split the "
        "fleet's telemetry, events, results, deaths and commands ($share/GROUP/...). Empty: "
        "this hub hears everything alone.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive (s).")
    session_expiry_s: int = Field(
        604_800,
        ge=0,
        le=2**32 - 1,
        description="How long the broker keeps this hub's session while it is away (killed, "
        "restarting, cut off): its subscriptions, and the fleet's QoS 1 messages queued for it "
        "(bounded by the broker's max_queued_messages), delivered when it comes back (s). The "
        "client id is fixed, ea-hub-{fleet}-{hub id}. 0: a clean session per connection (what "
        "is published while the hub is away is lost to it).",
    )
    username: str = Field("", max_length=128, description="Broker user name; empty: anonymous.")
    password_file: Path | None = Field(
        None, description="File whose first line is the broker password."
    )
    tls: MqttTls = Field(default_factory=MqttTls, description="TLS settings ([mqtt.tls]).")
    hub_keys_dir: Path | None = Field(
        None,
        description="Directory of the hub keys (*.pub) the nodes trust: commands heard on the "
        "fleet's cmd topics are journaled only when signed by one of them (others are counted "
        "as forged). Empty: commands are journaled unverified.",
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay (s); doubles up to reconnect_max_s."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest reconnect delay (s), before jitter."
    )

    @field_validator("password_file", "hub_keys_dir", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)

    @model_validator(mode="after")
    def _consistent(self) -> HubMqtt:
        if self.password_file is not None and not self.username:
            raise_problems("HubMqtt", [(("password_file",), "requires username to be set")])
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise_problems("HubMqtt", [(("reconnect_max_s",), "must be >= reconnect_initial_s")])
        return self


# ---------------------------------------------------------------------------------- [database]
class _DatabaseBase(StrictModel):
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="First delay before reconnecting to the database (s)."
    )
    reconnect_max_s: float = Field(
        10.0, gt=0, le=600, description="Longest delay between reconnection attempts (s)."
    )
    operation_deadline_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="Longest a database operation (a connection, a batch, a maintenance pass) "
        "may take: one still running then is an outage (the connection is dropped, messages "
        "are held), which catches a server that hangs without closing its connections (s).",
    )

    @model_validator(mode="after")
    def _backoff(self) -> _DatabaseBase:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise_problems("database", [(("reconnect_max_s",), "must be >= reconnect_initial_s")])
        return self


class SqliteDatabase(_DatabaseBase):
    """An embedded SQLite file: nothing to install; one hub (and readers) on one machine."""

    type: Literal["sqlite"] = Field("sqlite", description="Selects SQLite.")
    path: Path | None = Field(
        None, description="The database file; default {state_dir}/hub.sqlite3."
    )
    busy_timeout_s: float = Field(
        5.0, ge=0, le=600, description="How long a write waits for another writer (s)."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresDatabase(_DatabaseBase):
    """A PostgreSQL server: one database for several hub replicas (psycopg 3)."""

    type: Literal["postgresql"] = Field(description="Selects PostgreSQL.")
    host: str = Field("127.0.0.1", min_length=1, max_length=253, description="Server host.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    dbname: str = Field("edge_agent_hub", min_length=1, max_length=63, description="Database name.")
    user: str = Field("edge_agent_hub", min_length=1, max_length=63, description="Role name.")
    password_file: Path | None = Field(
        None, description="File whose first line is the password; empty: none (trust, peer)."
    )
    sslmode: SslMode = Field("prefer", description="libpq sslmode.")
    sslrootcert: Path | None = Field(
        None, description="CA (PEM) to verify the server with (verify-ca, verify-full)."
    )
    connect_timeout_s: int = Field(
        5, ge=2, le=600, description="Limit of one connection attempt (s, libpq's minimum is 2)."
    )
    statement_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Limit of one statement, and of an unanswered connection (TCP user "
        "timeout), so that a database that hangs is treated as one that is down (s).",
    )

    @field_validator("password_file", "sslrootcert", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)


DatabaseSpec = Annotated[SqliteDatabase | PostgresDatabase, Field(discriminator="type")]


# ------------------------------------------------------------------------------------- [queue]
class QueueSection(StrictModel):
    """``[queue]``: fleet messages held in memory until the database has them."""

    max_messages: int = Field(100_000, ge=100, le=10_000_000, description="Messages held at most.")
    max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        le=16 * 1024**3,
        description="Payload bytes held at most (the decoded messages take a few times more).",
    )
    batch_max: int = Field(
        500, ge=1, le=100_000, description="Messages written per database transaction at most."
    )
    report_interval_s: float = Field(
        60.0,
        ge=0.1,
        le=86400.0,
        description="While the database is unreachable, log how much is held this often (s).",
    )
    spool: bool = Field(
        True,
        description="Append every held message to {state_dir}/spool before the broker is "
        "acknowledged, so that a killed hub loses none of them (heard again at the next start).",
    )
    spool_sync_interval_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="How often the spool is fsynced while it takes messages (0: after every "
        "one): what a power cut can lose; a killed process loses nothing either way (s).",
    )


# --------------------------------------------------------------------------------- [retention]
class RetentionSection(StrictModel):
    """``[retention]``: what the database keeps, so that it stays bounded."""

    telemetry_raw_s: float = Field(
        3600.0, ge=0, le=365 * _DAY, description="Every telemetry message is kept this long (s)."
    )
    telemetry_step_s: float = Field(
        300.0,
        ge=1,
        le=_DAY,
        description="Older telemetry keeps one point per node per this many seconds (the last).",
    )
    telemetry_keep_s: float = Field(
        30 * _DAY, ge=60, le=10 * 365 * _DAY, description="Telemetry older than this is deleted."
    )
    telemetry_max_rows_per_node: int = Field(
        20_000, ge=10, le=10_000_000, description="Telemetry rows per node at most (oldest go)."
    )
    health_groups_per_node: int = Field(
        64,
        ge=1,
        le=1024,
        description="Health windows are kept for the groups a node's newest birth declares, "
        "this many per node at most (the first by name); others are counted and dropped.",
    )
    events_keep_s: float = Field(
        90 * _DAY, ge=60, le=10 * 365 * _DAY, description="Events older than this are deleted."
    )
    events_max_rows: int = Field(
        1_000_000, ge=100, le=1_000_000_000, description="Event rows at most (oldest go)."
    )
    commands_keep_s: float = Field(
        90 * _DAY,
        ge=60,
        le=10 * 365 * _DAY,
        description="Commands and results older than this are deleted.",
    )
    commands_max_rows: int = Field(
        1_000_000,
        ge=100,
        le=1_000_000_000,
        description="Command rows, and result rows, at most (oldest go).",
    )
    maintenance_interval_s: float = Field(
        60.0, ge=0.1, le=86400.0, description="How often the bounds above are applied (s)."
    )
    maintenance_batch: int = Field(
        20_000,
        ge=100,
        le=10_000_000,
        description="Rows one maintenance pass looks at per table at most (the rest waits).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetentionSection:
        if self.telemetry_keep_s < self.telemetry_raw_s:
            raise_problems(
                "RetentionSection", [(("telemetry_keep_s",), "must be >= telemetry_raw_s")]
            )
        return self


# ----------------------------------------------------------------------------------- [http]
class HttpSection(StrictModel):
    """``[http]``: Prometheus metrics, the fleet as JSON and the fleet page (read-only)."""

    enabled: bool = Field(False, description="Serve /metrics, /api/fleet.json and the page.")
    listen: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address to listen on; keep it on loopback behind the operator's proxy "
        "(docs/hub.md).",
    )
    port: int = Field(9108, ge=0, le=65535, description="TCP port (0: any free port).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Host names (without port) a request's Host header may name, besides "
        "localhost, the loopback addresses, the listen address and this machine's name; any "
        "other gets 421 (DNS rebinding).",
    )
    max_connections: int = Field(
        64,
        ge=2,
        le=4096,
        description="Open HTTP connections at most (the oldest idle one is closed for a new one).",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Time a client has to send its request and to take the answer (s).",
    )


# ------------------------------------------------------------------------------- [rollouts]
class RolloutsSection(StrictModel):
    """``[rollouts]``: whether this replica carries staged rollouts (docs/hub.md)."""

    key_file: Path | None = Field(
        None,
        description="The hub's command signing key (ed25519, 'edge-agent-host keygen'): a "
        "replica with one carries the rollouts stored in the database; empty: it carries none.",
    )
    poll_interval_s: float = Field(
        1.0, ge=0.05, le=60.0, description="How often an idle runner looks for work (s)."
    )
    lease_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="A rollout whose runner has not renewed its lease for this long is taken "
        "over by another replica (s).",
    )

    @field_validator("key_file", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)


# ------------------------------------------------------------------------------- [learning]
class LearningSection(StrictModel):
    """``[learning]``: rounds the service runs by itself (docs/fleet-learning.md "Rounds run by
    the service"): on the replica with ``key_file``, the bundle key that signs them (and
    ``[rollouts] key_file``, the command key, to publish them and catch nodes up)."""

    key_file: Path | None = Field(
        None,
        description="The bundle signing key learned rounds are signed with (ed25519, "
        "'edge-agent-host keygen --name learning'): a bundle signer like the CI's, whose .pub "
        "the nodes hold in [daemon] trusted_keys_dir; never the hub's command key ([rollouts] "
        "key_file), whose .pub goes to [mqtt] hub_keys_dir.",
    )

    every_s: float = Field(
        0.0,
        ge=0,
        le=365 * _DAY,
        description="A line's round is due this long after its last one, once it has new "
        "accepted experience (0: not by time).",
    )
    min_experience: int = Field(
        0,
        ge=0,
        le=10**15,
        description="A line's round is also due as soon as this many agent-ticks of accepted "
        "experience wait for it (0: not by experience).",
    )
    check_interval_s: float = Field(
        60.0, ge=0.05, le=_DAY, description="How often the service looks for a round due (s)."
    )
    lines: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=256,
        description="The model lines (bundle names) it builds; empty: every line with deltas.",
    )
    forgetting: float = Field(1.0, ge=0, le=1, description="The merge's factor on earlier rounds.")
    max_share: float = Field(
        0.25, gt=0, le=1, description="A node's largest share of a column's increment a round."
    )
    mad_k: float = Field(
        5.0, gt=0, description="A node scored this many MADs below the median is refused."
    )
    gate_rollouts: int = Field(
        200, ge=1, le=100_000, description="The converter's int8 gate: agents simulated."
    )
    gate_steps: int = Field(30, ge=1, le=10_000, description="The gate: steps per agent.")
    publish: bool = Field(
        False, description="Start a staged rollout of each round built, with the options below."
    )
    rollout: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list,
        max_length=256,
        description="rollout start's options for a published round, as its words: "
        '["--group", "grid", "--waves", "1,10%,100%", "--criterion", ...] (no '
        "--rollback-bundle).",
    )
    lease_s: float = Field(
        900.0,
        ge=1,
        le=_DAY,
        description="A replica building a line's round holds the line's lease this long at "
        "most: another replica takes the line over only after a holder that crashed left it "
        "this long (s; longer than a round takes).",
    )
    catch_up_timeout_s: float = Field(
        120.0,
        ge=5.0,
        le=86400.0,
        description="A catch-up's node has this long to answer its deployment (no longer than "
        "the round's rollout's deploy timeout); one that goes offline fails at once: the "
        "rollout runner carries one rollout at a time, and a node that stops answering holds "
        "the next round and the other catch-ups this long at most (s).",
    )
    catch_up: bool = Field(
        True,
        description="Deploy a line's current version (its newest round whose rollout is done) "
        "to an online node's group that runs another version of the line: a node that joined "
        "late or was reset.",
    )

    @field_validator("key_file", mode="before")
    @classmethod
    def _optional_path(cls, value: object, info: ValidationInfo) -> str | None:
        return _path(value, info, optional=True)

    @property
    def enabled(self) -> bool:
        return self.every_s > 0 or self.min_experience > 0

    @model_validator(mode="after")
    def _consistent(self) -> LearningSection:
        problems: list[Problem] = []
        if self.rollout:
            # The same parser as rollout start's (config/rollout_options.py): checked here, so that
            # a bad option is check-config's line, never found when a round is published.
            from edge_agent_host.hub.config.rollout_options import (  # noqa: PLC0415
                parse_start_options,
            )

            try:
                parse_start_options(self.rollout)
            except ValueError as err:
                problems.append((("rollout",), str(err)))
        elif self.publish:
            problems.append((("rollout",), "publish = true needs rollout start's options, "
                             'at least ["--group", "G"]'))  # fmt: skip
        raise_problems("LearningSection", problems)
        return self


# ----------------------------------------------------------------------------------- the file
class HubConfig(StrictModel):
    """A whole ``edge-agent-hub`` config file."""

    hub: HubSection = Field(default_factory=HubSection, description="[hub]")
    mqtt: HubMqtt = Field(default_factory=HubMqtt, description="[mqtt]")
    database: DatabaseSpec = Field(
        default_factory=SqliteDatabase, description="[database]: type sqlite or postgresql."
    )
    queue: QueueSection = Field(default_factory=QueueSection, description="[queue]")
    retention: RetentionSection = Field(default_factory=RetentionSection, description="[retention]")
    rollouts: RolloutsSection = Field(default_factory=RolloutsSection, description="[rollouts]")
    http: HttpSection = Field(default_factory=HttpSection, description="[http]")
    learning: LearningSection = Field(default_factory=LearningSection, description="[learning]")

    @model_validator(mode="after")
    def _learning_signs(self) -> HubConfig:
        learning = self.learning
        if not learning.enabled:
            return self
        key = "every_s" if learning.every_s > 0 else "min_experience"
        problems: list[Problem] = []
        if learning.key_file is None:
            problems.append((("learning", key), LEARNING_KEY_MISSING))
        if (learning.publish or learning.catch_up) and self.rollouts.key_file is None:
            why = "publishes its rounds" if learning.publish else "catches late nodes up"
            problems.append(
                (("learning", key), f"the policy {why} with rollouts signed by the hub's command "
                 "key: set [rollouts] key_file (or publish = false and catch_up = false)")
            )  # fmt: skip
        raise_problems("HubConfig", problems)
        return self

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file in use (None with PostgreSQL)."""
        db = self.database
        if not isinstance(db, SqliteDatabase):
            return None
        return db.path if db.path is not None else self.hub.state_dir / "hub.sqlite3"


@dataclass(frozen=True)
class HubConfigFile:
    """A validated config and its document, for problems found later (a password file that
    cannot be read) at the line of their key."""

    config: HubConfig
    document: TomlDocument

    @property
    def path(self) -> str:
        return self.document.path

    def error(self, problems: list[Problem]) -> ConfigError:
        return self.document.error(problems)


def parse_hub_config(
    text: str, path: str = "<string>", *, base_dir: str | Path | None = None
) -> HubConfigFile:
    """Validate config ``text`` (``path`` names it in errors); ConfigError if it is bad."""
    document = TomlDocument.parse(text, path)
    config = validate_toml(HubConfig, document, context={"base_dir": base_dir})
    return HubConfigFile(config, document)


def load_hub_config(path: str | Path) -> HubConfigFile:
    """Read and validate a config file; relative paths in it are relative to its directory."""
    document = TomlDocument.read(path)
    base = Path(path).absolute().parent
    config = validate_toml(HubConfig, document, context={"base_dir": base})
    return HubConfigFile(config, document)


def read_password(source: HubConfigFile, loc: tuple[str, ...], path: Path | None) -> str | None:
    """The first line of a password file (None when none is set); a file that cannot be read is
    a ConfigError at the key's line."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise source.error([(loc, f"{path}: cannot read: {reason}")]) from err
    return lines[0] if lines else ""


#: What a config can select that needs the ``hub`` extra: (module, location, what needs it).
_EXTRA_MODULES: Final = (
    ("prometheus_client", ("http", "enabled"), "[http] (the metrics and the fleet page)"),
    ("psycopg", ("database", "type"), "PostgreSQL"),
)


def check_dependencies(source: HubConfigFile) -> None:
    """The Python packages of the ``hub`` extra that the config needs are installed:
    ``prometheus_client`` with ``[http] enabled``, ``psycopg`` with ``[database] type =
    "postgresql"``. ``check-config`` and ``run`` both call this first, so a missing one is one
    ``file:line: field: problem`` line from either, never found only when the service starts."""
    config = source.config
    needed = {
        "prometheus_client": config.http.enabled,
        "psycopg": isinstance(config.database, PostgresDatabase),
    }
    problems: list[Problem] = []
    for module, loc, what in _EXTRA_MODULES:
        if not needed[module]:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            problems.append(
                (
                    loc,
                    f"{what} needs the Python package {module}, which is not installed: "
                    "pip install 'edge-agent-runtime[hub]'",
                )
            )
    if problems:
        raise source.error(problems)


def example_config_text() -> str:
    """The commented example config shipped beside this module (``example.toml``)."""
    return resources.files("edge_agent_host.hub").joinpath("example.toml").read_text("utf-8")


LEARNING_KEY_MISSING: Final = (
    "rounds are signed with a bundle key of their own: set [learning] key_file (make one with "
    "'edge-agent-host keygen --out DIR --name learning' and put learning.pub in the nodes' "
    '[daemon] trusted_keys_dir; docs/fleet-learning.md "Signing keys")'
)
"""Why a hub whose ``[learning]`` runs rounds and has no ``key_file`` is refused: one line, at
``check-config`` and at the start (a hub of an earlier version signed rounds with its command
key, ``[rollouts] key_file``, which nodes set up as fleet.md says do not trust for bundles)."""


def file_problems(source: HubConfigFile) -> list[Problem]:
    """The files the config names that cannot be read (the broker's TLS files, the password
    files, the rollouts' key): what ``run`` would meet at its first connection, reported by
    ``check-config`` and at start as ``file:line: key: problem``."""
    c = source.config
    files: list[tuple[tuple[str, ...], Path | None]] = [
        (("mqtt", "password_file"), c.mqtt.password_file),
        (("rollouts", "key_file"), c.rollouts.key_file),
        (("learning", "key_file"), c.learning.key_file),
    ]
    if c.mqtt.tls.enabled:
        tls = c.mqtt.tls
        files += [
            (("mqtt", "tls", "ca_file"), tls.ca_file),
            (("mqtt", "tls", "cert_file"), tls.cert_file),
            (("mqtt", "tls", "key_file"), tls.key_file),
        ]
    if isinstance(c.database, PostgresDatabase):
        files.append((("database", "password_file"), c.database.password_file))
    problems: list[Problem] = []
    for loc, path in files:
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as err:
            problems.append((loc, f"{path}: cannot read: {err.strerror or err}"))
    hub_keys = c.mqtt.hub_keys_dir
    if hub_keys is not None and not hub_keys.is_dir():
        problems.append((("mqtt", "hub_keys_dir"), f"{hub_keys}: not a directory"))
    if not problems:
        problems += learning_key_problems(c)
    return problems


def learning_key_problems(c: HubConfig) -> list[Problem]:
    """``[learning] key_file`` that is the hub's command key (``[rollouts] key_file``), or
    cannot be read as a key: what ``check-config``, the start and ``learn build`` refuse."""
    if c.learning.key_file is None or c.rollouts.key_file is None:
        return []
    return _same_key(c.learning.key_file, c.rollouts.key_file)


def key_id_of(path: Path) -> str:
    """The key id of the private key file ``path`` (EdgeAgentError: not such a key)."""
    # cryptography only where a key is named (hub/service/loop.py imports it to run anyway).
    from edge_agent.bundle.signing import key_id  # noqa: PLC0415
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    return key_id(load_signing_key(path).public_key())


def _same_key(learning: Path, command: Path) -> list[Problem]:
    """A learning key that is the command key: the rule of docs/fleet.md's two key directories
    would not hold (a node that trusts it for bundles obeys its commands, or the reverse)."""
    try:
        same = key_id_of(learning) == key_id_of(command)
    except (OSError, EdgeAgentError) as err:
        return [(("learning", "key_file"), str(err))]
    if not same:
        return []
    return [
        (("learning", "key_file"), f"{learning}: is the hub's command key ([rollouts] key_file): "
         "rounds are signed with a bundle key of their own (edge-agent-host keygen --name "
         "learning; its .pub in the nodes' [daemon] trusted_keys_dir)")
    ]  # fmt: skip
