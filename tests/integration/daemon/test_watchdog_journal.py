"""A watchdog kill's thread stacks reach the journal at priority warning.

systemd kills a stalled daemon with SIGABRT; Python's faulthandler then writes every thread's
stack. Written to stderr, that lands in the journal at ``info`` and ``journalctl -p warning``
hides the one trace that explains the kill. This runs a real systemd-journald in a private mount
namespace (root: ``unshare -m``), the daemon on a journal stream as a unit's stderr is
(``systemd-cat``, with ``JOURNAL_STREAM`` set as systemd sets it), sends the SIGABRT the
watchdog sends and reads the journal back with ``journalctl -p warning``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon.test_daemon import PROFILES, REPO, write_config

pytestmark = pytest.mark.integration

JOURNALD = "/lib/systemd/systemd-journald"

SCRIPT = r"""
set -e
mount -t tmpfs tmpfs /run/systemd
mount --bind "$WORK/runlog" /run/log
mkdir -p /var/log/journal
mount -t tmpfs tmpfs /var/log/journal
"$JOURNALD" >"$WORK/journald.log" 2>&1 &
journald=$!
i=0
until [ -S /run/systemd/journal/stdout ]; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "journald did not start" >&2; exit 90; }; sleep 0.1
done
systemd-cat -t edge-agentd --level-prefix=true sh -c \
    'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"' sh \
    "$PYTHON" -m edge_agent run --config "$CONFIG" &
cat_pid=$!
i=0
until grep -q '"state": "running"' "$STATUS" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 1200 ] || { echo "the daemon did not start" >&2; exit 91; }
    sleep 0.1
done
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "$STATUS" | head -n 1)
kill -ABRT "$pid"
wait "$cat_pid" || true
journalctl --flush >/dev/null 2>&1 || true
echo "=== warning"
journalctl --no-pager -o cat -t edge-agentd -p warning
echo "=== all"
journalctl --no-pager -o cat -t edge-agentd
kill "$journald"
"""


def test_a_watchdog_kill_leaves_its_thread_stacks_at_priority_warning(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "runs journald in a private mount namespace: run it as root"
    for tool in ("unshare", "systemd-cat", "journalctl"):
        assert shutil.which(tool), f"{tool} not found: apt-get install systemd util-linux"
    assert Path(JOURNALD).exists(), f"{JOURNALD} not found: apt-get install systemd"
    (tmp_path / "runlog").mkdir()
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    write_config(config, state, grid=10, tmaze=10)
    done = subprocess.run(  # noqa: PLW1510 - asserted below
        ["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT],
        capture_output=True, text=True, timeout=180, cwd=REPO,
        env={**os.environ, "WORK": str(tmp_path), "JOURNALD": JOURNALD, "PYTHON": sys.executable,
             "CONFIG": str(config), "STATUS": str(state / "status.json"),
             "EDGE_AGENT_PROFILES_DIR": str(PROFILES), "PYTHONFAULTHANDLER": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    warning, _, everything = done.stdout.partition("=== all")
    assert "READY: profile x86-dev" in everything  # the daemon logged to this journal
    assert "READY: profile x86-dev" not in warning  # info stays out of -p warning
    assert "Fatal Python error: Aborted" in warning, done.stdout
    assert "most recent call first" in warning
    # The tick loop's frame, in the stack: the daemon's run() (it wrote "running" from inside
    # its loop). Not the loop's wait in scheduler.py: the kill may land while a tick runs.
    assert "edge_agent/daemon/service.py" in warning, warning
