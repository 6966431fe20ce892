"""The account's history: where a run keeps what it created when no ``--history`` is given.

A results file protects one input under one name. Loaded again under another name (a dated
file name in cron makes that easy), the same rows would be created a second time. So every
run keeps a history by default, one per account: the same SQLite database as ``--history``
(:class:`~bulkpost.storage.history.database.History`), at ``DATA/accounts/HOST-DIGEST.sqlite``,
where

- ``DATA`` is ``$BULKPOST_DATA_DIR``, else the user's data directory (``platformdirs``:
  ``$XDG_DATA_HOME/bulkpost`` or ``~/.local/share/bulkpost`` on Linux,
  ``~/Library/Application Support/bulkpost`` on macOS, ``%LOCALAPPDATA%\\bulkpost`` on
  Windows);
- ``HOST`` is the API host's name (and port), so a rehearsal on a sandbox never mixes with
  the real account;
- ``DIGEST`` is 16 hex digits of a SHA-256 of the access key: never the key, never the
  secret.

``--history FILE`` puts the history elsewhere (a nightly job that keeps it with its data);
``--create-again`` runs without one. Pure path arithmetic here; opening, locking and using
the database are :mod:`bulkpost.storage.history.database`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from bulkpost.core.credentials import account_digest
from bulkpost.core.hosts import host_url
from bulkpost.errors import UsageError

DATA_DIR_ENV = "BULKPOST_DATA_DIR"


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where bulkpost keeps its data: ``$BULKPOST_DATA_DIR``, else the user's data
    directory for bulkpost."""
    given = environ.get(DATA_DIR_ENV, "")
    if given:
        return Path(given).expanduser()
    return Path(platformdirs.user_data_dir("bulkpost", appauthor=False))


def account_history_path(host: str, access_key: str,
                         environ: Mapping[str, str] = os.environ) -> Path:
    """The account's own history: one file per API host and access key."""
    parts = urlsplit(host_url(host))
    name = parts.hostname or "host"
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if parts.port is not None and parts.port != default:
        name += f"_{parts.port}"
    name = re.sub(r"[^A-Za-z0-9.-]", "_", name)
    return data_dir(environ) / "accounts" / f"{name}-{account_digest(access_key)}.sqlite"


def ensure_private_dir(path: Path) -> None:
    """Create the history's folder (and its parents), readable by its owner only: the
    history keeps request bodies (lead ids, notes). Raises UsageError, saying what to do,
    when it cannot be created (a read-only home, HOME unset under cron or in a container)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{path.parent}: cannot keep this account's history there "
            f"({exc.strerror or exc}): set {DATA_DIR_ENV} to a folder this user may write, "
            "give --history FILE, or --create-again to keep none") from None
