"""What an entry point prints when a run cannot go on: one line on stderr and an exit code, never a
traceback (``HYDRA_FULL_ERROR=1`` keeps the traceback for developers).

- exit 2: a configuration mistake or a missing input (``ConfigError``, Hydra's own errors, a missing file
  or folder named in the configuration), found before any work;
- exit 1: the run could not finish — an input changed under it (``RunError``), a full disk (also numpy's
  errno-less "not enough free space"), a folder it may not write, any other operating-system error;
- exit 130: interrupted (Ctrl-C); the worker processes stop with it (``memguard.dedup.executor``).

What was committed before stays; nothing half-written is kept (every output is staged and renamed).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memguard.common.config import ConfigError, OutputInsideInput, RunError

NO_SPACE_TEXT = ("no space left", "not enough free space", "disk quota exceeded")


def _one_line(text: str) -> str:
    return " ".join(text.strip().split("\n")[0].split())


def _is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT) or any(t in str(err).lower() for t in NO_SPACE_TEXT)


def describe_os_error(err: OSError) -> str:
    """An OSError as one line naming the file: what it was, not the call that met it."""
    where = f" ({err.filename})" if err.filename else ""
    if _is_disk_full(err):
        return f"no space left on the device{where}; nothing half-written was kept"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"not allowed to write or read{where}: {err.strerror or err}"
    if isinstance(err, FileExistsError | NotADirectoryError) and err.filename:
        return f"{err.filename} is a file where a folder is needed: {err.strerror or err}"
    return f"{err.strerror or _one_line(str(err))}{where}"


def discard_hydra_run_dir(inside: Path) -> None:
    """Remove the run folder Hydra made for this run if it lies in ``inside`` and holds only what Hydra
    wrote (its .hydra/ and the job's log), and the parents it made that are left empty."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    root = inside.resolve()
    if not run_dir.is_relative_to(root) or run_dir == root:
        return
    ours = [p for p in run_dir.rglob("*") if p.is_file() and not (p.suffix == ".log" or ".hydra" in p.parts)]
    if ours:
        return  # something else is in it: never remove what this run did not write
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while parent != root and parent.is_relative_to(root) and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _exit(entry: str, message: str, code: int) -> None:
    print(f"{entry}: error: {message}", file=sys.stderr)
    raise SystemExit(code) from None


@contextmanager
def one_line_errors(entry: str) -> Iterator[None]:
    """Wrap an entry point's whole work (configuration, model loading, the run): see the module docstring."""
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    try:
        yield
    except (ConfigError, OmegaConfBaseException) as err:
        if isinstance(err, OutputInsideInput):
            discard_hydra_run_dir(Path(err.root))
        _exit(entry, _one_line(str(err)), 2)
    except (FileNotFoundError, NotADirectoryError) as err:
        if err.errno is None or not err.filename:  # raised by our checks with a message of their own
            _exit(entry, _one_line(str(err)), 2)
        _exit(entry, describe_os_error(err), 2 if isinstance(err, FileNotFoundError) else 1)
    except RunError as err:
        _exit(entry, _one_line(str(err)), 1)
    except OSError as err:
        _exit(entry, describe_os_error(err), 1)
    except KeyboardInterrupt:
        _exit(entry, "interrupted; what was committed before stays, nothing half-written was kept", 130)
