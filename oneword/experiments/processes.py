"""Which process on which machine runs a run or a job, told apart from a later process that
got the same id (process ids are reused once a process ends)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()
SAME_START = 1.0  # seconds: start times read at different moments agree within a clock tick


def process_started(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch; None where the system does not
    say (no /proc) or the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time


def process_alive(pid: int, started: float | None = None) -> bool:
    """True if process `pid` runs on this machine and, when `started` is known, is the process
    that started then (not a later one with the same id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    now = process_started(pid)
    return started is None or now is None or abs(now - started) < SAME_START


THIS_STARTED = process_started(os.getpid())
