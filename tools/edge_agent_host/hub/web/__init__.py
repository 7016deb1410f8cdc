"""What the hub serves over HTTP: the fleet page (``index.html``), ``/api/fleet.json``
(:mod:`.fleet_view`) and ``/metrics``, from a snapshot the service's loop makes
(:mod:`.server`)."""
