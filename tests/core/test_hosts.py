"""A host as a URL: one rule for ``--host``, the account's history and an answer's host."""

from __future__ import annotations

import pytest

from bulkpost.core.hosts import host_url


@pytest.mark.parametrize(("given", "url"), [
    ("api-in21.leadsquared.com", "https://api-in21.leadsquared.com"),
    ("api-in21.leadsquared.com/", "https://api-in21.leadsquared.com/"),
    ("127.0.0.1:8080", "https://127.0.0.1:8080"),
    ("https://api-in21.leadsquared.com", "https://api-in21.leadsquared.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("ftp://x", "ftp://x"),  # a URL stays as given: check_host refuses its scheme
    ("", ""),
])
def test_a_bare_host_means_https(given: str, url: str) -> None:
    assert host_url(given) == url
