"""The mapping file read from disk: TOML in, a checked :class:`~bulkpost.core.mapping.Mapping` out.

What the mapping may say, and its checks, are :mod:`bulkpost.core.mapping`'s.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from bulkpost.core.mapping import Mapping, parse_mapping
from bulkpost.errors import MappingError


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; raise :class:`MappingError` on any problem."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise MappingError(f"{source}: mapping file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{source}: cannot read the mapping: {exc}") from None
    return parse_mapping(data, source)
