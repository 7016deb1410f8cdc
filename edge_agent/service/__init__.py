"""The parts every long-running service of the project shares: ``edge-agentd`` (the device
daemon, :mod:`edge_agent.daemon`) and ``edge-agent-hub`` (the hub service, on the host).

* :mod:`~edge_agent.service.metrics`: one registry of counters and gauges, read by the status
  file, telemetry and the Prometheus text file.
* :mod:`~edge_agent.service.periodic`: a job the loop runs at most every ``interval_s``.
* :mod:`~edge_agent.service.systemd`: sd_notify, the progress-based watchdog gate, fault dumps
  to the journal.
* :mod:`~edge_agent.service.pids`: whether a process named in a status file still runs.
* :mod:`~edge_agent.service.logs`: logging to stderr, with syslog priorities under journald.
* :mod:`~edge_agent.service.closed_stdout`: the boundary of the four command lines
  (``edge-agent``, ``edge-agentd``, ``edge-agent-host``, ``edge-agent-hub``): a standard output
  whose reader went away ends the command quietly, exit 141.

They import nothing of the project but :mod:`edge_agent.fsutil`, so a service loads only what it
uses; nothing here imports :mod:`edge_agent.daemon`.
"""
