"""How a row's number is shown to people: the data row, and the line a spreadsheet shows.

Rows are numbered from 1 in data order, the header not counted: the results file's ``row``
column, the failures file and every JSON field keep that number alone. A spreadsheet shows
the one-line header as line 1, so data row N is its line N + 1; a message for people gives
both, once (``row 17 (line 18 in a spreadsheet)``), and its other row numbers are data rows.
"""

from __future__ import annotations


def spreadsheet_line(row: int) -> int:
    """The line a spreadsheet shows data row ``row`` on, under a one-line header."""
    return row + 1


def row_and_line(row: int) -> str:
    """``row 17 (line 18 in a spreadsheet)``."""
    return f"row {row} (line {spreadsheet_line(row)} in a spreadsheet)"


def rows_and_lines(rows: list[int], shown: int = 5) -> str:
    """``rows 3, 9 and 12 (lines 4, 10 and 13 in a spreadsheet)``; the first ``shown`` of
    them, then ``…``."""
    if len(rows) == 1:
        return row_and_line(rows[0])
    more = " …" if len(rows) > shown else ""

    def listed(numbers: list[int]) -> str:
        if len(numbers) == 1 or more:
            return ", ".join(map(str, numbers)) + more
        return ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"

    first = rows[:shown]
    return (f"rows {listed(first)} (lines {listed([spreadsheet_line(n) for n in first])} "
            "in a spreadsheet)")
