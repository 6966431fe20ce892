"""Faithful string forms of input values.

The API takes every value as a string, so each Arrow column is turned into a list of
``str`` exactly once, here. The rules: strings unchanged; integers without ".0" (nullable
ones too); floats as the shortest digits that read back to the same number, never in exponent form
(integral ones without ".0"); decimals with their scale; booleans ``true``/``false``; timestamps as
``YYYY-MM-DD HH:MM:SS`` (converted to UTC when the type carries a zone); dates
``YYYY-MM-DD``; times of day ``HH:MM:SS``; nulls as "". Pure functions of Arrow arrays, no I/O.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bulkpost.core.activity import API_DATETIME_FORMAT
from bulkpost.errors import InputError


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_string_view(kind))


def is_supported(kind: pa.DataType) -> bool:
    """True for the types :func:`to_strings` formats faithfully."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(_is_text(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_decimal(kind) or pa.types.is_boolean(kind)
                or pa.types.is_timestamp(kind) or pa.types.is_date(kind)
                or pa.types.is_time(kind) or pa.types.is_null(kind))


def check_supported(field: pa.Field, input_name: str) -> None:
    """Raise :class:`InputError` for a column type that has no faithful string form."""
    if not is_supported(field.type):
        raise InputError(f"{input_name}: column {field.name!r} has type {field.type}, "
                         "which cannot be sent as a field value")


def is_utc_timestamp(kind: pa.DataType) -> bool:
    """True when values of this type are formatted as UTC (a zone-aware timestamp)."""
    return pa.types.is_timestamp(kind) and kind.tz is not None


def _float_text(value: float, width: type[np.floating[Any]]) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    # The shortest digits that read back to the same value at the column's own width
    # (1.1 stays "1.1" in a float32 column, not 1.100000023841858), written as plain
    # digits: the API takes numbers as digits, not 1e+20.
    return np.format_float_positional(width(value), unique=True, trim="-")


def to_strings(array: pa.Array | pa.ChunkedArray) -> list[str]:
    """Format one column as API strings, nulls as ""."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode() if isinstance(array, pa.Array) else pc.cast(
            array, kind.value_type)
        kind = array.type
    if _is_text(kind):
        values: list[Any] = array.to_pylist()
        return [v if v is not None else "" for v in values]
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        text = pc.cast(array, pa.string()).to_pylist()
        return [v if v is not None else "" for v in text]
    if pa.types.is_floating(kind):
        width = kind.to_pandas_dtype()
        return [_float_text(v, width) if v is not None else "" for v in array.to_pylist()]
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:
            array = pc.cast(array, pa.timestamp(kind.unit, "UTC"))
            array = pc.local_timestamp(array)
        # Whole seconds first: strftime's %S would print the unit's fraction too.
        seconds = pc.cast(pc.floor_temporal(array, unit="second"), pa.timestamp("s"))
        text = pc.strftime(seconds, format=API_DATETIME_FORMAT)
        return [v if v is not None else "" for v in text.to_pylist()]
    if pa.types.is_date(kind):
        text = pc.strftime(pc.cast(array, pa.date32()), format="%Y-%m-%d")
        return [v if v is not None else "" for v in text.to_pylist()]
    if pa.types.is_time(kind):
        # Whole seconds, as timestamps: a time of day, not a duration (no fraction).
        return [f"{v:%H:%M:%S}" if v is not None else "" for v in array.to_pylist()]
    if pa.types.is_null(kind):
        return [""] * len(array)
    return [str(v) if v is not None else "" for v in array.to_pylist()]


def value_text(value: Any) -> str:
    """The faithful string of one Python scalar (a DataFrame object column's value): text
    unchanged, integers without ".0", floats as their shortest digits (NaN empty),
    booleans ``true``/``false``, decimals as written (never in exponent form)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        width = type(value) if isinstance(value, np.floating) else np.float64
        return _float_text(float(value), width)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
