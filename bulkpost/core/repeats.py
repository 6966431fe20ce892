"""Repeated keys inside one input: what the other rows with a row's key say of it. No I/O.

An export can hold one key in more than one row: the same call exported twice (an *exact
repeat*: the same key, the same content), or two different calls under one id (a *key
conflict*: the same key, other content). A row's key is its ``key_column`` value; without
one (or with an empty cell) it is the row's content, as in the history, so that identical
rows are exact repeats. The rules, which hold with and without ``--history``:

- an exact repeat is created once, by the key's first row; the later rows are ``skipped``
  (``error_type`` :data:`REPEAT`, "repeat of row 17");
- the rows of a key whose contents differ are all ``invalid``, none sent, each naming the
  other rows: which one is the call the key means is for the user to say, by fixing the
  export. A row of the key that does not validate has other content than a valid one.

What is known of a key comes from :class:`~bulkpost.storage.input_keys.InputKeys`: the whole input,
read once before the first row is sent; or, for an input that can only be read once, the
rows before this one (so the first row of a conflicting key has gone before the conflict
shows: the later ones are ``invalid``). A :class:`Repeat` carries either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REPEAT = "repeat"  # the skipped line's error_type of an exact repeat
LISTED = 6  # a key's first rows kept to name (the others are counted)
SHOWN_KEYS = 20  # repeated keys listed by a dry run (the others are counted)


@dataclass(frozen=True, slots=True)
class Repeat:
    """The rows of the input with a row's key: all of them (the input read beforehand), or
    those up to the row (an input read once); the row is one of them."""

    key: str  # the key column's value; "": the row's key is its content
    first: int  # the key's first row
    rows: int  # how many rows have the key (two or more)
    listed: tuple[int, ...]  # its first rows, up to LISTED
    differ: bool  # not all hold the same content (one of them did not validate, say)

    def others(self, row: int) -> str:
        """The key's other rows, for a sentence: "row 17", "rows 17, 903 and 4 more"."""
        shown = [r for r in self.listed if r != row][:LISTED - 1]
        more = self.rows - 1 - len(shown)
        text = ", ".join(map(str, shown)) + (f" and {more:,} more" if more > 0 else "")
        return ("row " if len(shown) == 1 and more <= 0 else "rows ") + text

    def conflict(self, row: int) -> str:
        """Why a row of a key with differing contents is invalid."""
        return (f"key {self.key!r} is also in {self.others(row)} with other content: fix the "
                "export or give each call its own key")

    def repeat_of(self) -> str:
        """Why a later row of an exact repeat is skipped."""
        what = "" if self.key else " (the same content; the input has no key for it)"
        return f"repeat of row {self.first}{what}"

    def line(self) -> str:
        """One line of the dry run's list of repeated keys."""
        rows = ", ".join(map(str, self.listed))
        if self.rows > len(self.listed):
            rows += f" and {self.rows - len(self.listed):,} more"
        if self.differ:
            return (f"key {self.key!r}: rows {rows}, with differing contents: none is sent "
                    "(fix the export or give each call its own key)")
        what = f"key {self.key!r}: rows {rows}" if self.key else (
            f"rows {rows} are identical (no key: a row's key is its content)")
        return f"{what}: created once, by row {self.first}; the others are repeats"


def repeated_lines(keys: int, differing: int, rows: int, shown: Sequence[Repeat]) -> list[str]:
    """The dry run's report of the input's repeated keys: how many, and the first of them
    (the keys with differing contents first); empty when no key repeats."""
    if not keys:
        return []
    lines = [f"{keys:,} repeated key{'' if keys == 1 else 's'} in {rows:,} rows"
             + (f", {differing:,} with differing contents (their rows are invalid)"
                if differing else "") + ":"]
    lines += [f"  {repeat.line()}" for repeat in shown]
    if keys > len(shown):
        more = keys - len(shown)
        lines.append(f"  … and {more:,} more repeated key{'' if more == 1 else 's'}")
    return lines
