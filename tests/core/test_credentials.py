"""The keys: never shown, checked as the environment gives them, named by a digest."""

from __future__ import annotations

import pytest

from bulkpost.core.credentials import Credentials, account_digest, checked_key
from bulkpost.errors import UsageError
from bulkpost.onboarding.account import GivenKeys

ACCESS, SECRET = "u$r0a1b2c3d4e5f60718293a4b5c6d7e8f9", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_neither_key_appears_in_a_repr() -> None:
    """A traceback that shows locals (rich, better_exceptions) prints reprs: never a key."""
    for holder in (Credentials(ACCESS, SECRET),
                   GivenKeys(ACCESS, SECRET, ("LSQ_ACCESS_KEY", "LSQ_SECRET_KEY"))):
        shown = repr(holder)
        assert ACCESS not in shown and SECRET not in shown, shown


def test_scrub_blanks_both_keys_out_of_a_text() -> None:
    keys = Credentials(ACCESS, SECRET)
    assert keys.scrub(f"GET ?k={ACCESS}&s={SECRET}") == "GET ?k=***&s=***"


def test_a_key_is_stripped_and_refused_with_a_space_or_control_byte() -> None:
    assert checked_key("LSQ_ACCESS_KEY", f"  {ACCESS}\n") == ACCESS
    with pytest.raises(UsageError, match="set LSQ_ACCESS_KEY in the environment"):
        checked_key("LSQ_ACCESS_KEY", "   ")
    with pytest.raises(UsageError, match="Windows line ends"):
        checked_key("LSQ_SECRET_KEY", f"{SECRET}\r{SECRET}")


def test_the_digest_names_an_account_without_its_key() -> None:
    digest = account_digest(ACCESS)
    assert len(digest) == 16 and ACCESS not in digest
    assert digest == account_digest(ACCESS) != account_digest(SECRET)
