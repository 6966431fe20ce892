"""Stored values as the API shows them, compared with what was sent: by meaning, never loosely.

Owns how a value that bulkpost sent is recognised when the API shows it back (in "Get
Activities of a Lead" or "Get Custom Fields of an Activity"). Pure functions only:

- :func:`decodings` gives the readings of a shown text: as it stands, with numeric HTML
  entities decoded (``&#x1F447;``, ``&#233;``: a real account showed non-ASCII characters of
  notes that way, ``&`` and newlines left as they were), and fully HTML-unescaped. Decoding
  happens on the answer's side only: the input is what it is;
- :func:`same_value` compares a sent value with a shown one by the field's kind (from the
  activity type's schema): numbers numerically (``12.50`` = ``12.5``), dates and date-times
  as values whatever their format (``2024-01-05`` = ``1/5/2024 12:00:00 AM``), dropdowns
  case-insensitively, everything else exactly (after entity decoding);
- :func:`parse_shown_datetime` reads the date-time forms answers use (``2025-04-04
  12:10:26``, ISO with ``T``/``Z``, ``4/4/2025 12:10:26 PM``) as UTC.

A value that cannot be read in its kind is *not* the same: a mismatch leaves a row to be
looked up again or ``unknown``, never to be sent twice.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

_NUMERIC_ENTITY = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));")
_US_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S",
               "%m/%d/%Y %H:%M", "%m/%d/%Y")
ENTITY_RULES = ("none", "numeric", "html")  # how an account encodes shown text


def _numeric_char(match: re.Match[str]) -> str:
    code = int(match.group(1), 16) if match.group(1) else int(match.group(2))
    try:
        return chr(code)
    except (ValueError, OverflowError):
        return match.group(0)


def decode(text: str, rule: str) -> str:
    """``text`` read under one entity rule: ``none``, ``numeric`` (``&#…;`` only) or ``html``."""
    if rule == "numeric":
        return _NUMERIC_ENTITY.sub(_numeric_char, text) if "&#" in text else text
    if rule == "html":
        return html.unescape(text) if "&" in text else text
    return text


def decodings(text: str, rule: str | None = None) -> tuple[str, ...]:
    """The readings of a shown text: under ``rule`` once it is known, else under each."""
    if rule is not None:
        return (decode(text, rule),)
    if "&" not in text:
        return (text,)
    return tuple(dict.fromkeys(decode(text, r) for r in ENTITY_RULES))


def entity_rule(sent: str, shown: str) -> str | None:
    """Which rule turns the text ``shown`` back into ``sent``, when the two tell (a text
    with an ``&`` or a non-ASCII character); None when they cannot tell, or none does."""
    if sent.isascii() and "&" not in sent:
        return None
    fitting = [rule for rule in ENTITY_RULES if decode(shown, rule) == sent]
    return fitting[0] if len(fitting) == 1 else None  # two that fit: the text cannot tell


def parse_shown_datetime(text: str) -> datetime | None:
    """A date-time as answers show it, in UTC (naive values are UTC); None if unreadable."""
    text = text.strip()
    if not text:
        return None
    value: datetime | None = None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for fmt in _US_FORMATS:
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _as_date(text: str) -> date | None:
    value = parse_shown_datetime(text)
    if value is None or (value.hour, value.minute, value.second) != (0, 0, 0):
        return None
    return value.date()


def _as_number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def same_value(kind: str, sent: str, shown: str, entities: str | None = None) -> bool:
    """Whether the API showing ``shown`` stores what bulkpost sent as ``sent``.

    ``kind`` is the field's kind (``number``, ``date``, ``datetime``, ``dropdown``,
    ``string``); ``entities`` the account's entity rule once known.
    """
    if sent == shown:
        return True
    readings = decodings(shown, entities)
    if sent in readings:
        return True
    if sent.strip() == "" or all(r.strip() == "" for r in readings):
        return False  # one empty and the other not: different in every kind
    if kind == "number":
        wanted = _as_number(sent)
        return wanted is not None and any(_as_number(r) == wanted for r in readings)
    if kind == "date":
        wanted_day = _as_date(sent)
        return wanted_day is not None and any(_as_date(r) == wanted_day for r in readings)
    if kind == "datetime":
        wanted_at = parse_shown_datetime(sent)
        return wanted_at is not None and any(
            parse_shown_datetime(r) == wanted_at for r in readings)
    if kind == "dropdown":
        return any(r.casefold() == sent.casefold() for r in readings)
    return False
