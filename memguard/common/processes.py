"""Worker processes that end with the run: they die with their parent, and leave Ctrl-C to it."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """A worker blocked on a full queue or busy with a long task never notices that its parent was
    SIGKILLed: ask Linux to kill it along with the parent."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def leave_interrupts_to_the_parent() -> None:
    """Ctrl-C reaches every process of the terminal's group: a worker ignores it, so that only the parent
    reports it (one line) and stops the workers, instead of each worker printing its own traceback. The
    parent stops a worker with SIGTERM, which exits it as a normal exit does: what the worker registered
    (the semaphores of its progress bars' locks) is released, and the resource tracker has nothing to report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(_signum: int, _frame: object) -> None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process is ending; no traceback for the stop
    raise SystemExit(1)


def die_with(pid: int) -> None:
    """End this process when process ``pid`` ends (a daemon thread waits on a pidfd). For workers started by
    a fork server, whose parent is the fork server: it only exits once its workers have (each holds its
    "alive" pipe), so the workers cannot wait for their parent to die, and would outlive a killed run."""
    if not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # it is gone already
        os._exit(1)

    def wait_then_exit() -> None:
        select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)

    threading.Thread(target=wait_then_exit, name=f"die-with-{pid}", daemon=True).start()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done, then raise it (KeyboardInterrupt) at its end. For a step
    that cannot be interrupted halfway cleanly, such as starting a process pool. A handler rather than a
    signal mask: Python runs its handlers in the main thread whichever thread the signal reached."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
