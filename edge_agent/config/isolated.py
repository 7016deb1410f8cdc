"""Read the daemon's config in a short-lived process, so that the daemon never loads pydantic.

Validating a config and the firmware profiles takes pydantic and the validators it builds for
every record: about 18 MB that would stay in the daemon for as long as it runs
(``benchmarks/notes/memory.md``). :func:`read_config_isolated` runs
:func:`~edge_agent.config.daemon.read_config` in a child process instead (``python -m
edge_agent.config.isolated [FILE]``) and takes back the result: the validated records, the
document with its lines and the profiles, which are plain dataclasses
(:mod:`edge_agent.records`), or the problems, ``path:line: field: problem`` as usual.

The child is this same interpreter running this same package, and its answer comes over a
pipe the daemon opened, so it is unpickled like any import of our own code. When the child
cannot run at all (no memory for a second interpreter, say), the config is read in the daemon's
own process, with a warning: a node that cannot spare the memory still starts.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

from edge_agent.config.daemon import ConfigFile, read_config
from edge_agent.errors import ConfigError

__all__ = ["read_config_isolated"]

logger = logging.getLogger(__name__)

#: Exit status of a child that found problems in the config (its output is the problems).
_REFUSED = 3
#: How long a child may take (reading profiles and a config takes well under a second).
TIMEOUT_S = 120.0


def read_config_isolated(path: str | Path | None) -> ConfigFile:
    """:func:`~edge_agent.config.daemon.read_config` of ``path`` (``None``: the embedded demo
    config), validated in a child process. Raises ConfigError exactly as ``read_config`` does."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "edge_agent.config.isolated"]
    if path is not None:
        command.append(str(path))
    try:
        done = subprocess.run(command, capture_output=True, env=env, timeout=TIMEOUT_S, check=False)
        if done.returncode in (0, _REFUSED):
            answer = pickle.loads(done.stdout)
            if done.returncode == 0 and isinstance(answer, ConfigFile):
                return answer
            if done.returncode == _REFUSED and isinstance(answer, dict):
                raise ConfigError(
                    answer["message"], path=answer["path"], problems=answer["problems"]
                )
        why = f"exit status {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"
    except (OSError, subprocess.TimeoutExpired, pickle.UnpicklingError, EOFError) as err:
        why = str(err)
    logger.warning("reading the config in a child process failed (%s); reading it here", why)
    return read_config(path)


def main(argv: list[str]) -> int:
    """The child: read and validate, write the pickled answer to stdout."""
    path = argv[0] if argv else None
    try:
        answer: object = read_config(path)
        status = 0
    except ConfigError as err:
        answer = {"message": str(err), "path": err.path, "problems": list(err.problems)}
        status = _REFUSED
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
