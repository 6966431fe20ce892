"""LeadSquared's documented regional API hosts, reading one out of an answer's text, and a
host as a URL.

Pure: :mod:`bulkpost.onboarding.region` asks these hosts which one holds the keys, and
:mod:`bulkpost.core.response` names the right one when a 401 from the wrong region says it.
A bare host name (``api-in21.leadsquared.com``, as the README lists the regions) means
``https://`` it, wherever a host is given or read (:func:`host_url`).
"""

from __future__ import annotations

import re

# LeadSquared's documented regional API hosts, in the order they are tried, and where each is.
REGIONS: dict[str, str] = {
    "api.leadsquared.com": "Singapore",
    "api-us11.leadsquared.com": "US",
    "api-in21.leadsquared.com": "India, Mumbai",
    "api-in22.leadsquared.com": "India, Hyderabad",
    "api-ir31.leadsquared.com": "Ireland",
    "api-ca12.leadsquared.com": "Canada",
}
_HOST_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*\.leadsquared\.com", re.IGNORECASE)


def named_host(text: str) -> str | None:
    """The first documented host that ``text`` (a 401's message) names, or None."""
    for found in _HOST_NAME.finditer(text):
        name = found.group().lower()
        if name in REGIONS:
            return name
    return None


def described(name: str) -> str:
    """``api-in21.leadsquared.com (India, Mumbai)``."""
    return f"{name} ({REGIONS[name]})"


def host_url(host: str) -> str:
    """``host`` as a URL: a bare name (no ``scheme://``) means ``https://`` it; a URL, and
    the empty text, are returned as they are."""
    return f"https://{host}" if host and "://" not in host else host
