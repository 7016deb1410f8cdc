"""``edge-agent-host broker``: a mosquitto on which every client can be only itself.

``init`` writes, into one directory, a mosquitto configuration with a TLS listener, a CA, the
broker's certificate, an ACL, and per identity (each node, each hub, observers, sensors) the
files that identity connects with and the ``[mqtt]`` snippet of its daemon config::

    edge-agent-host broker init --fleet F --node ID [--node ID ...] --port P --out DIR
        [--hub NAME ...] [--observer NAME ...] [--sensor NAME ...]
        [--host NAME] [--bind ADDR] [--san NAME ...] [--auth cert|password]
        [--validity-days N] [--io-topic FILTER ...] [--io-read FILTER ...]
        [--device-dir PATH] [--run-as USER]
    edge-agent-host broker issue --out DIR --node ID | --hub NAME | ... [--rotate]
    edge-agent-host broker revoke --out DIR NAME

``DIR`` then holds ``mosquitto.conf`` (run ``mosquitto -c DIR/mosquitto.conf``), ``acl``,
``passwords`` (``--auth password``), ``broker.json`` (what was issued and revoked: ``issue``
and ``revoke`` read it), ``ca/`` (``ca.crt``, ``ca.key`` mode 0600, ``crl.pem``), ``broker/``
(the listener's certificate and key) and ``clients/NAME/`` (``ca.crt``, ``NAME.crt`` and
``NAME.key`` mode 0600, or ``password`` mode 0600; and ``mqtt.toml``, the ``[mqtt]`` of a node's
daemon config, or for a hub or an observer ``hub.toml``, the start of the hub service's config).

**Identity.** With ``--auth cert`` (the default) a client is the common name of its
certificate (``require_certificate``, ``use_identity_as_username``); with ``--auth password``
it is its user name, checked against ``passwords`` (PBKDF2-SHA512, the ``$7$`` format of
mosquitto 2's ``mosquitto_passwd``), over TLS all the same. ``use_username_as_clientid`` makes
the identity the MQTT client id too, so no client can take over another's session (and so fire
its will: "offline").

**ACL** (:func:`acl_text`): ``pattern`` lines bind the topics a node writes to its identity
(``%u``): every node-owned kind of :class:`~edge_agent.fleet.topics.Topics` (state, birth,
death, telemetry, event, result, beliefs, tasks, action). A node reads its inbox (cmd, rebirth,
obs) and the fleet's presence, beliefs and tasks, and may ask any node for a rebirth. A hub
reads the whole fleet and writes every node's ``cmd``; an observer only reads; a sensor writes
every node's ``obs``. ``--io-topic`` adds filters every identity may read and write (MQTT
sources and sinks outside the fleet tree, ``%u`` allowed as a whole level), ``--io-read``
filters it may read. Because patterns apply to every identity, each identity also holds the
node rights of its own name: names are unique across roles. ``docs/security.md`` explains it.
"""
