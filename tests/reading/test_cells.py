"""String forms of Arrow columns: every type as the API should receive it, nulls as ""."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bulkpost.errors import InputError
from bulkpost.reading.cells import check_supported, is_utc_timestamp, to_strings, value_text

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        (pa.int8(), [-128, 0, 127, None], ["-128", "0", "127", ""]),
        (pa.int16(), [-32768, 32767], ["-32768", "32767"]),
        (pa.int32(), [-(2**31), 2**31 - 1], ["-2147483648", "2147483647"]),
        (pa.int64(), [-(2**63), 2**63 - 1, None],
         ["-9223372036854775808", "9223372036854775807", ""]),
        (pa.uint8(), [0, 255], ["0", "255"]),
        (pa.uint16(), [65535], ["65535"]),
        (pa.uint32(), [2**32 - 1], ["4294967295"]),
        (pa.uint64(), [2**64 - 1, 0, None], ["18446744073709551615", "0", ""]),
    ],
)
def test_integers_in_full(kind: pa.DataType, values: list[int | None], expected: list[str]) -> None:
    assert to_strings(pa.array(values, kind)) == expected


def test_nullable_integers_from_pandas_have_no_decimal_point() -> None:
    series = pd.Series([1, None, 3, 12345678901234567], dtype="Int64")
    assert to_strings(pa.Array.from_pandas(series)) == ["1", "", "3", "12345678901234567"]


def half(values: list[float]) -> pa.Array:
    return pa.array(np.array(values, dtype=np.float16))


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array([1.1, 100.0, 0.0, -2.5, None]), ["1.1", "100", "0", "-2.5", ""]),
        # Plain digits, never exponent form: the API takes numbers as digits.
        (pa.array([1e20, 1e16, 1e-05, 0.30000000000000004, 123456789012345.0]),
         ["100000000000000000000", "10000000000000000", "0.00001", "0.30000000000000004",
          "123456789012345"]),
        (pa.array([float("inf"), float("-inf")]), ["Infinity", "-Infinity"]),
        (pa.array([float("nan"), None]), ["", ""]),
        (pa.array([1.1, 0.1, 100.0, -2.5, None, float("nan")], pa.float32()),
         ["1.1", "0.1", "100", "-2.5", "", ""]),
        (pa.array([16777216.0, 3.4e38, 1e20, 1.5e-7], pa.float32()),
         ["16777216", "340000000000000000000000000000000000000", "100000000000000000000",
          "0.00000015"]),
        (half([1.5, 0.1, 2048.0, float("nan")]), ["1.5", "0.1", "2048", ""]),
    ],
)
def test_floats_in_their_shortest_form(array: pa.Array, expected: list[str]) -> None:
    assert to_strings(array) == expected


@pytest.mark.parametrize("kind", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [1.1, 0.1, 1 / 3, 2 / 3e3, -123.456, 65504.0, 1.5e-5])
def test_float_text_reads_back_to_the_same_value(kind: type[np.floating], value: float) -> None:
    stored = kind(value)
    (text,) = to_strings(pa.array(np.array([stored])))
    assert kind(text) == stored
    assert not text.endswith(".0")


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        (pa.decimal128(10, 2), [Decimal("1.50"), Decimal("0.05"), Decimal("-3"), None],
         ["1.50", "0.05", "-3.00", ""]),
        (pa.decimal128(12, 4), [Decimal("100")], ["100.0000"]),
        (pa.decimal128(5, 0), [Decimal("12345")], ["12345"]),
        (pa.decimal256(40, 3), [Decimal("1234567890123456789012345678901234567.891")],
         ["1234567890123456789012345678901234567.891"]),
    ],
)
def test_decimals_keep_their_scale(
    kind: pa.DataType, values: list[Decimal | None], expected: list[str]
) -> None:
    assert to_strings(pa.array(values, kind)) == expected


def test_booleans_are_true_and_false() -> None:
    assert to_strings(pa.array([True, False, None])) == ["true", "false", ""]


STRINGS = ["", " padded ", "00123", "NA", "null", "日本語 🎉", 'q"uote', "a\nb", None]
STRINGS_OUT = ["", " padded ", "00123", "NA", "null", "日本語 🎉", 'q"uote', "a\nb", ""]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_strings_are_unchanged(kind: pa.DataType) -> None:
    assert to_strings(pa.array(STRINGS, kind)) == STRINGS_OUT


@pytest.mark.parametrize("index", [pa.int8(), pa.int32(), pa.uint16()])
@pytest.mark.parametrize("value", [pa.string(), pa.large_string()])
def test_dictionary_encoded_strings_are_decoded(index: pa.DataType, value: pa.DataType) -> None:
    array = pa.array(STRINGS, value).dictionary_encode().cast(pa.dictionary(index, value))
    assert to_strings(array) == STRINGS_OUT


def test_dictionary_encoded_chunks_with_different_dictionaries() -> None:
    chunks = pa.chunked_array([
        pa.array(["b", None, "a"]).dictionary_encode(),
        pa.array(["c", "b"]).dictionary_encode(),
    ])
    assert to_strings(chunks) == ["b", "", "a", "c", "b"]


def test_dictionary_encoded_integers_are_formatted_as_integers() -> None:
    assert to_strings(pa.array([7, None, 7]).dictionary_encode()) == ["7", "", "7"]


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1, None, 2**64 - 1], pa.uint64()),
        pa.array([1.1, None, 1e20], pa.float32()),
        pa.array([1.1, float("nan"), 100.0]),
        pa.array([Decimal("1.50"), None], pa.decimal128(5, 2)),
        pa.array(["x", None, "y"]),
        pa.array([True, None]),
        pa.array([datetime(2024, 3, 5, 10, 54, 7, 1), None], pa.timestamp("us", "Asia/Kolkata")),
        pa.array([date(2024, 3, 5), None]),
    ],
)
def test_chunked_arrays_format_like_one_array(array: pa.Array) -> None:
    chunked = pa.chunked_array([array[:1], array[1:0], array[1:]], array.type)
    assert to_strings(chunked) == to_strings(array)


TIMES = [datetime(2024, 3, 5, 10, 54, 7, 999999), None, datetime(1969, 12, 31, 23, 59, 59, 500000),
         datetime(1900, 1, 1)]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_naive_timestamps_in_whole_seconds(unit: str) -> None:
    # Fractions are dropped by flooring, so a time before 1970 does not round up.
    assert to_strings(pa.array(TIMES, pa.timestamp(unit))) == [
        "2024-03-05 10:54:07", "", "1969-12-31 23:59:59", "1900-01-01 00:00:00"]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize(
    ("local", "zone", "utc"),
    [
        (datetime(2024, 3, 5, 16, 24, 7, 500000, tzinfo=KOLKATA), "Asia/Kolkata",
         "2024-03-05 10:54:07"),
        (datetime(2024, 3, 1, 3, 0, tzinfo=KOLKATA), "Asia/Kolkata", "2024-02-29 21:30:00"),
        (datetime(2024, 7, 1, 12, 0, tzinfo=NEW_YORK), "America/New_York", "2024-07-01 16:00:00"),
        (datetime(2024, 1, 15, 12, 0, tzinfo=NEW_YORK), "America/New_York",
         "2024-01-15 17:00:00"),
        (datetime(2024, 1, 15, 12, 0, tzinfo=ZoneInfo("UTC")), "UTC", "2024-01-15 12:00:00"),
        (datetime(2024, 1, 15, 12, 0, tzinfo=KOLKATA), "+05:30", "2024-01-15 06:30:00"),
    ],
)
def test_zone_aware_timestamps_are_converted_to_utc(
    unit: str, local: datetime, zone: str, utc: str
) -> None:
    assert to_strings(pa.array([local, None], pa.timestamp(unit, zone))) == [utc, ""]


def test_timestamp_years_below_1000_keep_four_digits() -> None:
    assert to_strings(pa.array([datetime(999, 1, 2, 3, 4, 5)], pa.timestamp("s"))) == [
        "0999-01-02 03:04:05"]


@pytest.mark.parametrize("kind", [pa.date32(), pa.date64()])
def test_dates(kind: pa.DataType) -> None:
    values = [date(2024, 3, 5), None, date(1900, 1, 1), date(2038, 1, 19)]
    assert to_strings(pa.array(values, kind)) == ["2024-03-05", "", "1900-01-01", "2038-01-19"]


@pytest.mark.parametrize("kind", [pa.time32("s"), pa.time32("ms"), pa.time64("us"),
                                  pa.time64("ns")])
def test_times_of_day_in_whole_seconds(kind: pa.DataType) -> None:
    values = [time(14, 5, 33), None, time(0, 0), time(23, 59, 59, 999000)]
    assert to_strings(pa.array(values, kind)) == ["14:05:33", "", "00:00:00", "23:59:59"]


@pytest.mark.parametrize(
    "array", [pa.nulls(3), pa.array([None, None, None], pa.int64()), pa.array([None] * 3)]
)
def test_all_null_columns_are_empty_strings(array: pa.Array) -> None:
    assert to_strings(array) == ["", "", ""]


@pytest.mark.parametrize(
    "kind", [pa.int64(), pa.float64(), pa.string(), pa.timestamp("us", "UTC"), pa.date32()]
)
def test_an_empty_column_gives_no_strings(kind: pa.DataType) -> None:
    assert to_strings(pa.array([], kind)) == []


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (pa.timestamp("s", "UTC"), True),
        (pa.timestamp("ns", "Asia/Kolkata"), True),
        (pa.timestamp("us"), False),
        (pa.date32(), False),
        (pa.string(), False),
    ],
)
def test_is_utc_timestamp(kind: pa.DataType, expected: bool) -> None:
    assert is_utc_timestamp(kind) is expected


@pytest.mark.parametrize(
    "kind",
    [
        pa.list_(pa.int32()),
        pa.large_list(pa.string()),
        pa.list_(pa.int32(), 3),
        pa.list_view(pa.int32()),
        pa.struct([("a", pa.int32())]),
        pa.map_(pa.string(), pa.int32()),
        pa.binary(),
        pa.large_binary(),
        pa.binary(16),
        pa.dictionary(pa.int32(), pa.binary()),
    ],
)
def test_check_supported_refuses_types_without_a_string_form(kind: pa.DataType) -> None:
    with pytest.raises(InputError) as caught:
        check_supported(pa.field("amount", kind), "orders.parquet")
    assert str(caught.value) == (
        f"orders.parquet: column 'amount' has type {kind}, which cannot be sent as a field value")


def test_check_supported_refuses_binary_view() -> None:
    with pytest.raises(InputError):
        check_supported(pa.field("blob", pa.binary_view()), "orders.parquet")


@pytest.mark.parametrize(
    "kind",
    [
        pa.string(), pa.large_string(), pa.string_view(), pa.int64(), pa.uint64(), pa.float32(),
        pa.float16(), pa.decimal128(10, 2), pa.bool_(), pa.timestamp("ns", "Asia/Kolkata"),
        pa.date32(), pa.date64(), pa.null(), pa.dictionary(pa.int8(), pa.string()),
    ],
)
def test_check_supported_accepts_types_with_a_string_form(kind: pa.DataType) -> None:
    check_supported(pa.field("amount", kind), "orders.parquet")


@pytest.mark.parametrize(("value", "expected"), [
    ("A-1", "A-1"), (17, "17"), (np.int64(-3), "-3"), (2**70, str(2**70)), (3.5, "3.5"),
    (0.1, "0.1"), (1e20, "100000000000000000000"), (np.float32(1.1), "1.1"), (17.0, "17"),
    (True, "true"), (np.bool_(False), "false"), (Decimal("1.50"), "1.50"),
    (Decimal("1E+2"), "100"),
])
def test_one_python_value_as_its_faithful_string(value: object, expected: str) -> None:
    assert value_text(value) == expected
