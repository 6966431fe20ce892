"""What the results file holds of each row, in memory: compact per-row arrays.

Owns the index a resume plans from, no I/O: lines go in as bytes, answers come out. Per
row it keeps the status, the content hash, a digest of the key, a digest of the activity Id
a posted row holds, and where the row's last line starts in the file (for reading it back
and for compaction): 33 bytes a row, so resuming a million rows stays small. A row's last
line wins.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from bulkpost.core.results_line import ESCAPED, RowOutcome, parse_fields, split_line, unescape_value
from bulkpost.core.resume import Recorded, key_digest
from bulkpost.core.statuses import Status
from bulkpost.storage.results_file import DamagedLine

_STATUS_CODES = {status: index for index, status in enumerate(Status, start=1)}
_STATUS_BY_CODE = {index: status for status, index in _STATUS_CODES.items()}
_CODES_BY_TEXT = {status.value.encode(): index for status, index in _STATUS_CODES.items()}
_POSTED = _STATUS_CODES[Status.POSTED]
_UPDATED = _STATUS_CODES[Status.UPDATED]  # holds its activity too, with this content
_FIXED = _STATUS_CODES[Status.FIXED]  # holds the activity its fix created
# The common line: no quotes (hence no comma or line break inside a field), every field as
# written. Its row, key, status, activity Id and content hash; any other line is read whole.
_COMMON_LINE = re.compile(
    rb"([1-9][0-9]*),([^,\"]*),([a-z]+),([^,\"]*),[0-9]*,[^,\"]*,[^,\"]*,[0-9]*,[^,\"]*,"
    rb"([0-9a-fA-F]{0,16})\r?\n")


class RowIndex:
    """Every row's last line, by row number (0: no line). Rows below 1 are ignored."""

    def __init__(self) -> None:
        self._status = array("b")
        self._hash = array("Q")
        self._key = array("Q")
        self._id = array("Q")  # digest of the activity Id a posted row holds; 0: none
        self._offset = array("q")

    # -- filling -----------------------------------------------------------------------
    def replay(self, lines: Iterable[bytes], offset: int,
               path: str | Path = "results file") -> tuple[int, int]:
        """Remember every line of an existing file, the first starting at byte ``offset``
        (the file's second line); return where the whole lines end and how many there are.

        Stops at a line without its line break (torn by a crash): the end returned is where
        it starts. Raises :class:`~bulkpost.storage.results_file.DamagedLine` for a line that does
        not
        read back (``path`` names the file). A resume of
        a million lines is dominated by this loop, so the common line (no quotes, hence no
        comma or line break inside a field) is split directly and stored without building an
        outcome (:data:`_COMMON_LINE`); the others go through
        :func:`~bulkpost.storage.results_file.parse_fields`.
        """
        codes, remember, common = _CODES_BY_TEXT, self._set, _COMMON_LINE.fullmatch
        number = 1
        for raw in lines:
            if not raw.endswith(b"\n"):
                break
            number += 1
            match = common(raw)
            code = codes.get(match[3]) if match is not None else None
            if match is None or code is None:
                # Not the common line: read it whole, or say what is damaged.
                try:
                    self.remember(parse_fields(split_line(raw)), offset)
                except ValueError as exc:
                    raise DamagedLine(path, number, raw, str(exc)) from None
            else:
                key = match[2].decode("utf-8", "replace")
                activity_id = match[4].decode("utf-8", "replace")
                if key.startswith(ESCAPED):
                    key = unescape_value(key)
                if activity_id.startswith(ESCAPED):
                    activity_id = unescape_value(activity_id)
                content_hash = match[5]
                remember(int(match[1]), code, int(content_hash, 16) if content_hash else 0,
                         key, offset, activity_id)
            offset += len(raw)
        return offset, number - 1

    def remember(self, outcome: RowOutcome, offset: int) -> None:
        """Make ``outcome``, whose line starts at byte ``offset``, its row's last line."""
        self._set(outcome.row, _STATUS_CODES[outcome.status],
                  int(outcome.content_hash, 16) if outcome.content_hash else 0,
                  outcome.key, offset, outcome.activity_id)

    def _set(self, row: int, code: int, content_hash: int, key: str, offset: int,
             activity_id: str) -> None:
        if row < 1:
            return
        if row >= len(self._status):
            grow = max(row + 1, 2 * len(self._status)) - len(self._status)
            self._status.frombytes(bytes(grow))
            self._hash.frombytes(bytes(8 * grow))
            self._key.frombytes(bytes(8 * grow))
            self._id.frombytes(bytes(8 * grow))
            self._offset.frombytes(b"\xff" * (8 * grow))  # -1: no line
        self._status[row] = code
        self._hash[row] = content_hash
        self._key[row] = key_digest(key) if key else 0
        # Only a posted (updated, fixed) row holds its activity: a skipped line names
        # another's. A look-up never takes a held activity for another row's.
        self._id[row] = (key_digest(activity_id)
                         if activity_id and code in (_POSTED, _UPDATED, _FIXED) else 0)
        self._offset[row] = offset

    # -- queries -----------------------------------------------------------------------
    def recorded(self, row: int) -> Recorded | None:
        """What an earlier run (or this one) recorded last for ``row``."""
        try:
            code = self._status[row]
        except IndexError:
            return None
        if not code:
            return None
        content_hash = self._hash[row]
        return Recorded(_STATUS_BY_CODE[code], f"{content_hash:016x}" if content_hash else "",
                        self._key[row])

    def last_posted_row(self) -> int:
        """The highest row number recorded ``posted`` (or ``updated``) with a content hash
        (0: none)."""
        codes = np.frombuffer(self._status, dtype=np.int8)
        done = (codes == _POSTED) | (codes == _UPDATED)
        posted = np.flatnonzero(done & (np.frombuffer(self._hash, dtype=np.uint64) != 0))
        return int(posted[-1]) if len(posted) else 0

    def holds(self, activity_id: str) -> bool:
        """Whether a posted row holds this activity: then no other row may claim it.

        Compared by digest, over a compact per-row array (8 bytes a row), so a resume need
        not hold a million activity Ids in memory; a look-up asks for a few Ids at most.
        """
        if not activity_id:
            return False
        ids = np.frombuffer(self._id, dtype=np.uint64)
        return bool(np.any(ids == np.uint64(key_digest(activity_id))))

    def counts(self) -> dict[Status, int]:
        """How many rows are in each status now."""
        totals = dict.fromkeys(Status, 0)
        for code in self._status:
            if code:
                totals[_STATUS_BY_CODE[code]] += 1
        return totals

    def line_offset(self, row: int) -> int | None:
        """Where the row's last line starts in the file; None: the row has no line."""
        if row >= len(self._status) or not self._status[row]:
            return None
        return self._offset[row]

    def line_offsets(self) -> Iterator[int]:
        """Where each row's last line starts, in row order (rows without a line left out)."""
        offsets = self._offset
        for row, code in enumerate(self._status):
            if code:
                yield offsets[row]
