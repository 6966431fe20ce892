"""A pandas DataFrame as Arrow data, its object columns read value by value first.

Owns what ``bulkpost.run(df, …)`` does with a column of dtype ``object`` (what
``pd.concat`` of frames that disagree usually gives): Arrow takes a column of one kind
(text, dates, decimals) as it is, but refuses one mixing text and numbers, and reads one
mixing integers and floats as floats (9007199254740993 would lose its last digit). So a
column whose values are text, integers, floats and booleans, not all text, is sent as each
value's faithful string (:func:`bulkpost.reading.cells.value_text`: ``17``, ``3.5``, ``true``;
``None``/``NaN`` empty), and a column holding anything else (bytes, dicts, lists, other
objects) is refused with an :class:`~bulkpost.errors.InputError` naming the column, the
first such row and the fix. No Arrow error reaches the caller.
"""

from __future__ import annotations

import datetime
import decimal
import numbers
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from bulkpost.errors import InputError
from bulkpost.reading.cells import value_text

if TYPE_CHECKING:
    import pandas as pd

# Kinds of value whose faithful string is the value's own (cells.value_text).
_SCALAR = frozenset({"text", "integer", "float", "boolean", "decimal"})
# Kinds Arrow reads as a column of one kind, into a type cells formats.
_ARROW_ALONE = frozenset({"decimal", "date", "date-time", "time"})


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return type(value).__name__


def _fix(kind: str, column: str) -> str:
    if kind in ("bytes", "bytearray"):
        return f"decode it first, e.g. df[{column!r}] = df[{column!r}].str.decode('utf-8')"
    if kind in ("dict", "list", "tuple"):
        return (f"turn it into text first, e.g. df[{column!r}] = "
                f"df[{column!r}].map(json.dumps, na_action='ignore')")
    if kind in _ARROW_ALONE:
        return f"write its {kind} values as text first (e.g. with .isoformat())"
    return (f"turn its values into text first, e.g. df[{column!r}] = "
            f"df[{column!r}].map(str, na_action='ignore')")


def _null(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(value is None or value is pd.NA or value is pd.NaT
                    or (isinstance(value, float) and value != value))
    except (TypeError, ValueError):
        return False


def _object_column(name: str, series: pd.Series[Any]) -> list[str] | None:
    """The column's strings when it must be read value by value (None: Arrow reads it)."""
    kinds: dict[str, int] = {}  # kind -> first row (1-based) holding it
    for row, value in enumerate(series.tolist(), start=1):
        if not _null(value):
            kinds.setdefault(_kind(value), row)
    others = {k: row for k, row in kinds.items() if k not in _SCALAR}
    if not kinds or set(kinds) == {"text"} or (len(kinds) == 1 and set(kinds) <= _ARROW_ALONE):
        return None
    if others:
        kind, row = min(others.items(), key=lambda item: item[1])
        value = f"row {row}: {series.iloc[row - 1]!r:.60}"
        if kind in _ARROW_ALONE:
            rest = ", ".join(sorted(set(kinds) - {kind}))
            raise InputError(f"source: column {name!r} mixes {kind} values with {rest} "
                             f"values ({value}): {_fix(kind, name)}")
        raise InputError(f"source: column {name!r} holds {kind} values ({value}), which "
                         f"have no text form to send: {_fix(kind, name)}")
    return ["" if _null(value) else value_text(value) for value in series.tolist()]


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table without its index; object columns as said above."""
    converted = frame
    for position, name in enumerate(frame.columns):
        series = frame.iloc[:, position]  # by position: names and labels may repeat
        if series.dtype == object and (text := _object_column(str(name), series)) is not None:
            if converted is frame:
                converted = frame.copy(deep=False)
            converted.isetitem(position, text)
    try:
        return pa.Table.from_pandas(converted, preserve_index=False)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    for position, name in enumerate(converted.columns):  # which one Arrow cannot read
        try:
            pa.Array.from_pandas(converted.iloc[:, position])
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise InputError(f"source: column {str(name)!r} cannot be read ({exc}): "
                             f"{_fix('', str(name))}") from None
    raise InputError("source: the DataFrame cannot be read as a table (are its column "
                     "names unique?)")
