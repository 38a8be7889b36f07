"""Imported first by the process pool's fork server (``executor._run_in_pool``): from then on Ctrl-C is
ignored in the fork server, and so in every worker it forks from the worker's first instruction — a worker
still starting when the terminal's Ctrl-C reaches the whole process group must not die of it (a broken
pool and a traceback instead of the run's one line). The run itself reports the interrupt and stops its
workers. Imported anywhere else, this module changes nothing."""

from __future__ import annotations

import signal
import sys
import threading


def _imported_by_the_fork_server() -> bool:
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith("forkserver.py") and "multiprocessing" in code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


if threading.current_thread() is threading.main_thread() and _imported_by_the_fork_server():
    # The fork server saves this handler and restores it in each child it forks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
