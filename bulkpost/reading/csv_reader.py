"""pyarrow's streaming CSV reader, opened and let go of safely.

Owns every CSV reader's life: how it is opened (blocks read one after another, so rows keep
their file order and invalid rows their numbers; the block size, grown for a row larger than
a block) and how it is let go. pyarrow reads a block ahead on its own I/O thread and holds
the Python row handler we give it; when the last reference to a reader drops on that thread
while Python is finalizing, the process aborts at exit ("terminate called without an active
exception", apache/arrow#34314). So a reader is closed by waiting until pyarrow has let go of
its handler, and readers still open at exit are closed before Python finalizes.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv

BLOCK_SIZE = 1 << 18
MAX_BLOCK_SIZE = 1 << 28  # the largest single row we read: 256 MiB
RELEASE_WAIT = 10.0  # seconds to wait for pyarrow's I/O thread to let go of a closed reader


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (pyarrow's go on for lines), else its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _RowHandler:
    """The Python callable pyarrow holds for a reader's invalid rows, weakly referenced so
    that closing the reader knows when pyarrow has let go of it."""

    __slots__ = ("__weakref__", "_on_row")

    def __init__(self, on_row: Callable[[Any], str]) -> None:
        self._on_row = on_row

    def __call__(self, row: Any) -> str:
        return self._on_row(row)


def _skip(_row: Any) -> str:
    return "skip"


class CsvReader:
    """pyarrow's streaming CSV reader, opened and let go safely: :meth:`close` drops it and
    waits until pyarrow's I/O thread has let go of it too (see the module's docstring).
    Iterating yields the record batches; the reader is closed at the end."""

    def __init__(self, path: Path, *, read_options: pcsv.ReadOptions, delimiter: str,
                 convert_options: pcsv.ConvertOptions | None = None,
                 on_invalid_row: Callable[[Any], str] = _skip) -> None:
        self._released = threading.Event()
        self._reader: pcsv.CSVStreamingReader | None = None
        handler = _RowHandler(on_invalid_row)
        weakref.finalize(handler, self._released.set).atexit = False
        _OPEN_READERS.add(self)
        try:
            self._reader = pcsv.open_csv(
                path, read_options=read_options, convert_options=convert_options,
                parse_options=pcsv.ParseOptions(newlines_in_values=True, delimiter=delimiter,
                                                invalid_row_handler=handler))
        except BaseException:
            del handler
            self.close()
            raise
        del handler

    @property
    def schema(self) -> pa.Schema:
        assert self._reader is not None, "the reader is closed"
        return self._reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while self._reader is not None:
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
        finally:
            self.close()

    def close(self) -> bool:
        """Let go of the reader; wait (a while at most) until pyarrow has let go of it.
        Whether it has."""
        _OPEN_READERS.discard(self)
        self._reader = None
        return self._released.wait(RELEASE_WAIT)


_OPEN_READERS: weakref.WeakSet[CsvReader] = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
    """Readers left open (an input read only in part) are let go before Python finalizes."""
    for reader in list(_OPEN_READERS):
        reader.close()


def read_options(encoding: str, block_size: int = BLOCK_SIZE,
                 **extra: Any) -> pcsv.ReadOptions:
    # use_threads=False keeps rows in file order and gives invalid rows their numbers.
    return pcsv.ReadOptions(use_threads=False, block_size=block_size, encoding=encoding,
                            **extra)
