"""Running a benchmark process under a time limit, with every process it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def run_group(command: list[str], timeout: float | None, merge: bool = False, grace: float = 10.0,
              **popen: object) -> tuple[int | None, str, str]:
    """Run ``command`` in a new process group; ``(exit status, stdout, stderr)``, status ``None`` when it ran
    past ``timeout`` seconds.

    A command past its time is stopped with SIGTERM to its group first (``torchrun`` passes that on to
    its workers, which run in sessions of their own; a benchmark script that called
    :func:`exit_on_sigterm` stops the groups it started), SIGKILL after ``grace`` seconds. The same
    happens when this process is interrupted while it waits. ``merge``: stderr goes into stdout.
    ``popen``: more arguments of :class:`subprocess.Popen`.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                               text=True, start_new_session=True, **popen)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return process.returncode, stdout, stderr or ""
    except subprocess.TimeoutExpired:
        stdout, stderr = _stop(process, grace)
        return None, stdout, stderr or ""
    except BaseException:  # interrupted (SIGTERM via exit_on_sigterm, Ctrl-C): take the group along
        _stop(process, grace)
        raise


def exit_on_sigterm() -> None:
    """Turn SIGTERM into :class:`SystemExit`, so that :func:`run_group` stops what it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _stop(process: subprocess.Popen, grace: float) -> tuple[str, str]:
    _signal_group(process.pid, signal.SIGTERM)
    try:
        return process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        return process.communicate()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
