"""Keeping a second run out of a file: an exclusive lock on a lock file beside it, and on
the file itself, taken without waiting.

The lock file beside the file (named after its resolved path) holds the holder's process
id, for the message that refuses a second run. The lock on the file itself keys the lock on
the file's identity (device and inode): a second run through another name of the same file
(a hard link) is refused too; the holder's process id is then read from the kernel's table
of locks where there is one (``/proc/locks``). A ``flock`` never touches SQLite's own
locks (``fcntl`` byte ranges), and the descriptor is closed only after the database is, so
closing it cannot drop them. A file replaced while locked (the results file's compaction)
has its replacement locked before it takes the name (:func:`keep_locked`), so the lock never
lapses; a run that locked the file a name no longer holds opens the name again.

The lock is the kernel's, so it is released when the process dies, even by ``kill -9``:
a crashed run never leaves a stale lock behind (its lock file may stay, holding no lock;
the next run takes it). A clean :func:`release` removes the lock file. The holder writes
its process id into the file, so that a run refused names the process to wait for.

Removing a lock file races with a run that opened it just before: that run would lock a
file no longer at the path, while a third run creates a new one there and locks it too.
So the holder removes the file while it still holds the lock, and a run that gets a lock
checks that the file it locked is still the one at the path (same device and inode), and
otherwise opens the path again. (Windows cannot remove a file that is open: there the
lock file is removed just after it is closed, which is safe for the same reason, since a run
holding it open keeps it in place.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import lock_descriptor

from bulkpost.errors import Locked, UsageError
from bulkpost.storage.outputs import output_problem


@dataclass(slots=True)
class _Held:
    lock_path: Path  # the lock file beside the file, for release() to remove
    files: list[int]  # descriptors of the file itself (and its replacements), locked


# The locks this process holds, by the lock file's descriptor.
_HELD: dict[int, _Held] = {}

# Flags Windows needs (bytes as written) and Linux has (not inherited by child processes).
_BINARY = getattr(os, "O_BINARY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# The byte Windows locks: far past the end of any results file or history.
_FAR = 1 << 62


def _try_lock(fd: int) -> bool:
    """Lock the file open on ``fd`` for this descriptor, without waiting: whether it was
    free. Raises OSError when the file system cannot lock it."""
    if sys.platform == "win32":  # pragma: no cover - the tests run on Linux
        import msvcrt
        os.lseek(fd, _FAR, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):  # another descriptor holds it
                return False
            raise
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    return lock_descriptor(fd, blocking=False)


def lock_beside(path: Path, what: str, error: type[Locked], real: Path | None = None) -> int:
    """Take ``path``'s lock file (``<name>.lock``) and the lock on the file itself (created,
    readable by its owner only, when it does not exist), or raise ``error``; return a
    handle, to be given to :func:`release`. Raises :class:`UsageError` when the file cannot
    be created there (naming the directory to create, or the problem). ``real``: the path
    resolved, when the caller resolved it already (messages name ``path``)."""
    problem = output_problem(path)
    if problem is not None:
        if not Path(path).parent.exists():
            problem += f"; to resume an earlier run instead, give the {what} it wrote"
        raise UsageError(f"{what} {path}: {problem}")
    real = real or Path(os.path.realpath(path))  # one lock whatever name or link it has
    lock_path = real.with_name(real.name + ".lock")
    # Never suggest another file: for the same input, a new results file (or history) would
    # send every row again.
    fd = _lock_at(lock_path, os.O_RDWR | os.O_CREAT | _BINARY, 0o644,
                  lambda reason: f"{path}: cannot lock the {what}: {reason} ({lock_path})",
                  f"{path}: cannot lock the {what}",
                  lambda held: error(f"{path}: another bulkpost run is using this {what} "
                                     f"({_holder(held)}lock {lock_path}): wait for it to "
                                     "finish, then run this command again to go on where it "
                                     "stopped"))
    with contextlib.suppress(OSError):  # the process id is a courtesy, not the lock
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[fd] = _Held(lock_path, [])
    try:
        _HELD[fd].files.append(_lock_file_itself(path, real, what, error))
    except BaseException:
        release(fd)
        raise
    return fd


def _lock_file_itself(path: Path, real: Path, what: str, error: type[Locked]) -> int:
    """Lock the file at ``real`` by its identity; its descriptor."""
    return _lock_at(real, os.O_RDONLY | os.O_CREAT | _CLOEXEC | _BINARY, 0o600,
                    lambda reason: f"{path}: cannot open the {what}: {reason}",
                    f"{path}: cannot lock the {what}",
                    lambda held: error(f"{path}: another bulkpost run is using this {what} "
                                       "under another name (a hard link to the same file; "
                                       f"{_file_holder(held)}): wait for it to finish, then "
                                       "run this command again to go on where it stopped"))


def _lock_at(target: Path, flags: int, mode: int, cannot_open: Callable[[str], str],
             cannot_lock: str, refused: Callable[[int], Locked]) -> int:
    """Open ``target`` and lock it without waiting, again until the file locked is the one
    at ``target`` (its holder may remove it, or compaction replace it, as we open it); its
    descriptor. ``refused``: the error for a lock held, given the descriptor (to name the
    holder); the other failures are :class:`UsageError`, worded by ``cannot_open`` (given
    the reason) and ``cannot_lock``."""
    while True:
        try:
            fd = os.open(target, flags, mode)
        except OSError as exc:
            raise UsageError(cannot_open(exc.strerror or str(exc))) from None
        try:
            free = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{cannot_lock}: {exc.strerror}") from None
        if not free:
            refusal = refused(fd)
            os.close(fd)
            raise refusal from None
        if _is_at(fd, target):
            return fd
        os.close(fd)  # removed or replaced as we opened it: lock the file now there


def keep_locked(handle: int, fd: int) -> None:
    """Lock, for the holder of ``handle``, the file open on ``fd`` (which this takes): a
    new file about to replace the locked one under its name. Raises OSError."""
    try:
        if not _try_lock(fd):
            raise BlockingIOError(errno.EWOULDBLOCK, "locked by another process")
    except OSError:
        os.close(fd)
        raise
    _HELD[handle].files.append(fd)


def release(fd: int) -> None:
    """Remove the lock file taken by :func:`lock_beside` and close ``fd`` (the lock goes
    with it). The file is removed only while locked and only if it is still ours."""
    held = _HELD.pop(fd, None)
    ours = False
    try:
        ours = held is not None and _is_at(fd, held.lock_path)
        if held is not None and ours:
            with contextlib.suppress(OSError):
                os.unlink(held.lock_path)
    finally:
        os.close(fd)
        for file_fd in held.files if held is not None else ():
            os.close(file_fd)
    if sys.platform == "win32" and held is not None and ours:  # pragma: no cover
        with contextlib.suppress(OSError):  # refused while open, by us or by a run waiting
            os.unlink(held.lock_path)


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
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f"pid {text}, " if text.isdigit() else ""


def _file_holder(fd: int) -> str:
    """``"pid 1234"`` of the process holding a ``flock`` on the file open on ``fd``, from
    the kernel's table of locks (Linux's), or what to look for where there is none."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            here = os.fstat(fd)
            where = f"{os.major(here.st_dev):02x}:{os.minor(here.st_dev):02x}:{here.st_ino}"
            for line in table:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == where \
                        and parts[4].isdigit() and int(parts[4]) != os.getpid():
                    return f"pid {parts[4]}"
    except OSError:
        pass
    return "look for another bulkpost process"
