"""Keeping a second run out of a file: an exclusive ``flock`` on a lock file beside it.

The lock is the kernel's, so it is released when the process dies, even by ``kill -9``:
a crashed run never leaves a stale lock behind (its lock file may stay, holding no lock;
the next run takes it). A clean :func:`release` removes the lock file. The holder writes
its process id into the file, so that a run refused names the process to wait for.

Removing a lock file races with a run that opened it just before: that run would lock a
file no longer at the path, while a third run creates a new one there and locks it too.
So the holder removes the file while it still holds the lock, and a run that gets a lock
checks that the file it locked is still the one at the path (same device and inode), and
otherwise opens the path again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from bulkpost.errors import Locked, UsageError
from bulkpost.outputs import output_problem

# The locks this process holds: descriptor -> lock file, for release() to remove.
_HELD: dict[int, Path] = {}


def lock_beside(path: Path, what: str, error: type[Locked]) -> int:
    """Take ``path``'s lock file (``<name>.lock``) or raise ``error``; return its descriptor,
    to be given to :func:`release`. Raises :class:`UsageError` when the file cannot be
    created there (naming the directory to create, or the problem)."""
    problem = output_problem(path)
    if problem is not None:
        if not Path(path).parent.exists():
            problem += f"; to resume an earlier run instead, give the {what} it wrote"
        raise UsageError(f"{what} {path}: {problem}")
    real = Path(os.path.realpath(path))  # one lock whatever name or link the file has
    lock_path = real.with_name(real.name + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"{path}: cannot lock the {what}: {exc.strerror} "
                             f"({lock_path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            # Never suggest another file: for the same input, a new results file (or
            # history) would send every row again.
            raise error(f"{path}: another bulkpost run is using this {what} ({holder}lock "
                        f"{lock_path}): wait for it to finish, then run this command again "
                        "to go on where it stopped") from None
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{path}: cannot lock the {what}: {exc.strerror}") from None
        if _is_at(fd, lock_path):
            break
        os.close(fd)  # its holder removed it as we opened it: lock the path's file now
    with contextlib.suppress(OSError):  # the process id is a courtesy, not the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[fd] = lock_path
    return fd


def release(fd: int) -> None:
    """Remove the lock file taken by :func:`lock_beside` and close ``fd`` (the lock goes
    with it). The file is removed only while locked and only if it is still ours."""
    lock_path = _HELD.pop(fd, None)
    try:
        if lock_path is not None and _is_at(fd, lock_path):
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    """Whether the file open on ``fd`` is the one at ``path`` now."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(fd: int) -> str:
    """``"pid 1234, "`` from the lock file, or nothing if it holds no process id yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f"pid {text}, " if text.isdigit() else ""
