"""Which encoding a sample of an input's bytes decodes in, said in words. No I/O.

Owns the advice ``bulkpost init`` gives when the export's bytes do not decode in the
encoding used: UTF-8 if they decode as UTF-8; else cp1252 when they hold bytes 0x80-0x9F
(Windows' curly quotes, dashes and euro sign: control characters in latin-1, so the export
is almost surely a Windows one); else, when cp1252 and latin-1 read every sampled byte the
same, both are named and cp1252 (which reads more) is the one to try; else latin-1 (which
reads any byte), saying the file may be in another encoding. A guess is never used
silently: the person gives the ``--encoding`` it names.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Bytes that cp1252 reads as characters and latin-1 as C1 control characters.
_WINDOWS_ONLY = range(0x80, 0xA0)


@dataclass(frozen=True, slots=True)
class EncodingAdvice:
    """The ``--encoding`` to give, and why, in words."""

    encoding: str
    reason: str


def codec_name(encoding: str) -> str:
    """The codec's own name (``UTF8`` and ``utf_8`` are ``utf-8``); the name given when
    Python does not know it."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


def first_undecodable(sample: bytes, encoding: str, *, complete: bool) -> int | None:
    """The offset of the first byte of ``sample`` that does not decode in ``encoding``, or
    None. ``complete``: the sample is the whole file (else a character cut at its end is
    not counted against it)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        decoder.decode(sample, final=complete)
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def advise(sample: bytes, tried: str, *, complete: bool) -> EncodingAdvice | None:
    """What to give as ``--encoding`` for bytes that do not decode in ``tried`` (None: no
    other candidate reads them)."""
    tried = codec_name(tried)

    def decodes(encoding: str) -> bool:
        return tried != codec_name(encoding) and first_undecodable(
            sample, encoding, complete=complete) is None

    if decodes("utf-8"):
        return EncodingAdvice("utf-8", "the bytes decode as UTF-8")
    windows = sorted({byte for byte in sample if byte in _WINDOWS_ONLY})
    if decodes("cp1252"):
        if windows:
            shown = ", ".join(f"0x{byte:02X} ({bytes([byte]).decode('cp1252')})"
                              for byte in windows[:3])
            return EncodingAdvice("cp1252", f"it holds bytes such as {shown} that only "
                                  "cp1252 reads as text (Windows exports, Excel's among them)")
        return EncodingAdvice("cp1252", "it could be cp1252 or latin-1: both read these bytes "
                              "the same (cp1252, as Windows programs write, reads more)")
    if decodes("latin-1"):
        return EncodingAdvice("latin-1", "cp1252 does not read these bytes; latin-1 reads "
                              "any byte, but the file may be in another encoding (cp1250, "
                              "cp1251, shift_jis…): check the text the dry run shows")
    return None
