"""What the hub serves over HTTP (:mod:`.server`): the fleet page (``index.html``),
``/api/fleet.json`` (:mod:`.fleet_view`) and ``/metrics`` (:mod:`.metrics`), all from the snapshot
the service's loop makes (:mod:`.snapshot`)."""
