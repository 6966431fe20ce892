"""The results file read back whole, and written compacted: the file's I/O.

Reading one back (:func:`read_outcomes`), a line that does not read back is damaged: a run
refuses the file (:class:`DamagedLine`), naming the line, since the row it may describe
could be sent twice; ``report`` lists such lines. Writing it compacted to one line a row
(:func:`write_compacted`) keeps the file's mode and owner. The line format is
:mod:`bulkpost.core.results_line`'s.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bulkpost.core.results_line import (
    HEADER,
    HEADER_LINE,
    RowOutcome,
    parse_fields,
    split_line,
)
from bulkpost.errors import UsageError


class DamagedLine(UsageError):
    """A results file holds a line that does not read back, or was cut short: a run
    refuses it, since the row the line may describe could be sent twice."""

    def __init__(self, path: str | Path, line: int, raw: bytes, reason: str) -> None:
        shown = raw.decode("utf-8", "replace").rstrip("\r\n")
        shown = shown if len(shown) <= 100 else shown[:100] + "…"
        super().__init__(
            f"{path}, line {line}: {reason} ({shown!r}). Nothing was sent: the row this line "
            "may describe could be sent twice. Check that row (`bulkpost report "
            f"{path}` lists every damaged line), then fix or delete the line, or restore the "
            "file from a copy, and run the same command again")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Damage:
    """A damaged line of a results file, as a report shows it."""

    line: int
    reason: str
    text: str


def read_outcomes(path: str | Path,
                  damaged: Callable[[Damage], None] | None = None) -> Iterator[RowOutcome]:
    """Every line of a results file, in file order (later lines win). A damaged line raises
    :class:`DamagedLine`, or, given ``damaged``, is passed to it and skipped. A torn last
    line (no line break: a run killed while writing it) is skipped, and passed to
    ``damaged`` too; a run cuts it off and looks its row up.
    """
    with open(path, "rb") as handle:
        first = handle.readline()
        header = first.decode("utf-8", "replace").rstrip("\r\n").split(",")
        if header != HEADER:
            raise UsageError(f"{path}: not a bulkpost results file (header {header!r})")
        number = 1
        for raw in handle:
            number += 1
            if not raw.endswith(b"\n"):
                if damaged is not None:
                    damaged(Damage(number, "torn: cut short while it was written (a run cuts "
                                   "it off and looks its row up)",
                                   raw.decode("utf-8", "replace")[:100]))
                break
            try:
                outcome = parse_fields(split_line(raw))
            except ValueError as exc:
                if damaged is None:
                    raise DamagedLine(path, number, raw, str(exc)) from None
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                damaged(Damage(number, str(exc), text[:100]))
                continue
            yield outcome


def write_compacted(path: Path, offsets: Iterable[int],
                    keep: Callable[[int], None] | None = None) -> None:
    """Rewrite the results file at ``path`` (the file itself, not a link to it) as the
    header and the lines starting at ``offsets``
    (one per row, in row order), by atomic replace, durably. The new file keeps the old
    one's mode (and owner and group, where allowed). ``keep`` is given a descriptor of the
    new file before it replaces the old one (to lock it: the lock must not lapse), and owns
    it. Raises OSError and leaves the file as it was."""
    temp = path.with_name(f".{path.name}.compact")
    fd = -1
    try:
        with open(path, "rb") as source:
            old = os.fstat(source.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # left by a run killed while compacting
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            with contextlib.suppress(OSError):
                os.fchown(fd, old.st_uid, old.st_gid)
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            with open(os.dup(fd), "wb") as target:
                target.write(HEADER_LINE)
                for offset in offsets:
                    source.seek(offset)
                    target.write(source.readline())
                target.flush()
                os.fsync(target.fileno())
            if keep is not None:
                keep(os.dup(fd))
            os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    sync_directory(path)


def sync_directory(path: Path) -> None:
    """Make a rename into ``path``'s folder durable (fsync the folder). Raises OSError."""
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
