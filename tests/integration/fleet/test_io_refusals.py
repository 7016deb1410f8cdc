"""A broker that refuses a group's I/O topics: the daemon says so once per topic, and counts.

A broker whose ACL refuses the SUBSCRIBE itself answers the SUBACK with 0x87 (EMQX, HiveMQ,
mosquitto with its dynamic security plugin; the ``acl_file`` that ``broker init`` writes grants
it and delivers nothing, docs/security.md: ``test_operator_journey.py`` covers that one). A
publish it refuses is answered with a PUBACK 0x87 (QoS 1). Here mosquitto runs its dynamic
security plugin with an ACL that refuses the node the filter of one group's ``mqtt`` source and
the topic of another group's ``mqtt`` sink; a real daemon runs both groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fleet.test_fleet_daemon import Node, status_view, wait_until
from tests.support.broker import MosquittoBroker, MosquittoMissingError

pytestmark = pytest.mark.integration

GROUPS = """
[[groups]]
name = "doors"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "mqtt", topic = "sensors/doors/+" }
sink = { type = "log" }

[[groups]]
name = "lights"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "mqtt", topic = "actuators/lights" }
"""

#: The plugin's ACL: everything allowed but reading the doors' sensors and writing actuators.
DYNSEC = {
    "defaultACLAccess": {
        "publishClientSend": True, "publishClientReceive": True, "subscribe": True,
        "unsubscribe": True,
    },
    "clients": [],
    "groups": [{"groupname": "anonymous", "roles": [{"rolename": "io"}]}],
    "roles": [{"rolename": "io", "acls": [
        {"acltype": "subscribeLiteral", "topic": "sensors/doors/+", "allow": False},
        {"acltype": "publishClientSend", "topic": "actuators/#", "allow": False},
    ]}],
    "anonymousGroup": "anonymous",
}  # fmt: skip


def dynamic_security_plugin() -> Path:
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    found += sorted(Path("/usr/lib").glob("mosquitto_dynamic_security.so"))
    if not found:
        pytest.fail(
            "mosquitto's dynamic security plugin (mosquitto_dynamic_security.so) is missing: "
            "apt-get install mosquitto (2.0 or newer ships it)"
        )
    return found[0]


@pytest.fixture
def refusing_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    config = tmp_path / "dynsec.json"
    config.write_text(json.dumps(DYNSEC))
    plugin = dynamic_security_plugin()
    try:
        broker = MosquittoBroker(
            tmp_path / "mosquitto",
            extra_config=f"plugin {plugin}\nplugin_opt_config_file {config}\n",
        )
    except MosquittoMissingError as err:
        pytest.fail(str(err))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def full_log(node: Node) -> str:
    return node.config.with_suffix(".log").read_text(errors="replace")


def test_a_refused_source_and_sink_are_each_said_once_and_counted(
    tmp_path: Path, refusing_broker: MosquittoBroker
) -> None:
    node = Node(tmp_path, refusing_broker, "pi-01", groups=GROUPS)
    node.start()
    try:
        # The lights group publishes every tick; each batch is refused.
        status = node.wait_status(
            lambda s: any(
                g["name"] == "lights" and g["actions"]["refused"] >= 5 for g in s["groups"]
            )
            and any(g["name"] == "doors" and g["io"]["refused"] >= 1 for g in s["groups"]),
            "refused subscription and action batches",
        )
        doors, lights = (next(g for g in status["groups"] if g["name"] == n)
                         for n in ("doors", "lights"))  # fmt: skip
        assert doors["io"]["refusal"] == "0x87 not authorized"
        assert doors["io"]["waiting"]  # it gets nothing: its agents never step
        assert lights["actions"]["refusal"] == "0x87 not authorized"
        counters = status["counters"]
        assert counters["io.subscriptions_refused"] >= 1
        assert counters["fleet.io_refused"] >= 1 + 5
        kinds = [e["kind"] for e in status["events"]]
        assert kinds.count("io_refused") == 2
        wait_until(
            lambda: "actions published on 'actuators/lights'" in full_log(node),
            "the daemon's line about the refused actions",
        )
        log = full_log(node)
        expected = {
            "doors": "group 'doors': the broker refused the subscription to 'sensors/doors/+' "
            "(0x87 not authorized): its ACL must let node 'pi-01' read it (edge-agent-host "
            "broker init --io-topic / --io-read, docs/security.md)",
            "lights": "group 'lights': the broker refused the actions published on "
            "'actuators/lights' (0x87 not authorized): its ACL must let node 'pi-01' write it "
            "(edge-agent-host broker init --io-topic / --io-read, docs/security.md)",
        }
        for line in expected.values():
            assert log.count(line) == 1, log[-4000:]
        view = status_view(node.state)
        assert "the broker REFUSED the subscription (0x87 not authorized)" in view
        assert "REFUSED by the broker (0x87 not authorized)" in view
        # Many more refused batches later, still one line each.
        more = lights["actions"]["refused"] + 20
        node.wait_status(
            lambda s: any(
                g["name"] == "lights" and g["actions"]["refused"] >= more for g in s["groups"]
            ),
            "more refused batches",
        )
        log = full_log(node)
        for line in expected.values():
            assert log.count(line) == 1
        assert node.stop() == 0
    finally:
        node.close()
