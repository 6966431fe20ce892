"""Keeping a second run out of a file: an exclusive ``flock`` on a lock file beside it.

The lock is the kernel's, so it is released when the process dies, even by ``kill -9``:
a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bulkpost.errors import Locked, UsageError


def lock_beside(path: Path, what: str, error: type[Locked]) -> int:
    """Take ``path``'s lock file (``<name>.lock``) or raise ``error``; return its descriptor,
    to be closed to release the lock."""
    real = Path(os.path.realpath(path))  # one lock whatever name or link the file has
    lock_path = real.with_name(real.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"{path}: cannot lock the {what}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise error(f"{path}: another bulkpost run is using this {what} (lock {lock_path}); "
                    "wait for it to finish, or give this run another file") from None
    except OSError as exc:
        os.close(fd)
        raise UsageError(f"{path}: cannot lock the {what}: {exc.strerror}") from None
    return fd
