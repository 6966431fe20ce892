"""An account's API keys: held without showing the secret, checked, and named by a digest.

The keys travel only in the ``x-LSQ-AccessKey``/``x-LSQ-SecretKey`` headers
(:mod:`bulkpost.delivery.client`). Here: the pair itself (its ``repr`` hides both keys, and
:meth:`Credentials.scrub` blanks both out of any text), a key as the environment gives it,
checked, and the account's digest, which names an account in file names and the sandbox's
ledger without revealing the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from bulkpost.errors import UsageError


@dataclass(frozen=True, slots=True)
class Credentials:
    """An account's API keys. Neither appears in ``repr`` (a traceback that shows locals
    shows ``Credentials()``)."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def scrub(self, text: str) -> str:
        """``text`` with both keys blanked out."""
        for secret in (self.secret_key, self.access_key):
            if secret:
                text = text.replace(secret, "***")
        return text


def checked_key(name: str, value: str) -> str:
    """An API key, stripped; refused when empty or holding a space or control byte."""
    value = value.strip()
    if not value:
        raise UsageError(f"set {name} in the environment")
    if any(ord(c) < 0x20 or c == "\x7f" or c.isspace() for c in value):
        raise UsageError(f"{name} contains a space or control character (an env file with "
                         "Windows line ends?)")
    return value


def account_digest(access_key: str) -> str:
    """16 hex digits that name an account's keys without revealing them."""
    return hashlib.sha256(f"bulkpost account\0{access_key}".encode()).hexdigest()[:16]
