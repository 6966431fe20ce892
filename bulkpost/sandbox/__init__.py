"""A LeadSquared look-alike on loopback, for the demo and the tests.

A fake with real behaviour, not a mock: the real Create, bulk Create and look-up paths, auth,
the API's validation and error bodies, a strict sliding-window rate limit per access key,
latency in three parts (the request's trip before the window counts it, the answer's
latency, a tail of slower answers) and faults, each call's drawn from its own seeded stream,
so that a seed replays a run. The look-ups answer in a :class:`~bulkpost.dialect.Dialect`
(``classic`` by default).

This module only re-exports; each part owns one job:

- :mod:`~bulkpost.sandbox.app`: the HTTP application, its endpoints, serving it;
- :mod:`~bulkpost.sandbox.paths`: the documented URL paths it serves;
- :mod:`~bulkpost.sandbox.gate`: auth, the windows, fates and faults played out over HTTP;
- :mod:`~bulkpost.sandbox.faults`: fault kinds, the owed schedule, per-call fate streams;
- :mod:`~bulkpost.sandbox.store`: the ledger, what is stored, the look-ups' answers;
- :mod:`~bulkpost.sandbox.validation`: the activity types and the checks of a create;
- :mod:`~bulkpost.sandbox.stats`: the counters ``GET /_sandbox/stats`` serves.
"""

from bulkpost.sandbox.app import Sandbox, serve
from bulkpost.sandbox.faults import (
    BULK_FAULTS,
    CREATE_FAULTS,
    FAULT_KINDS,
    LOOKUP_FAULTS,
    Fate,
    draw_fate,
    parse_faults,
    parse_latency,
    parse_tail,
)
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.sandbox.stats import ServerCounts
from bulkpost.sandbox.store import parse_altered
from bulkpost.sandbox.validation import CATALOG, MAX_BULK_ITEMS, activity_setting

__all__ = [
    "BULK_FAULTS",
    "CATALOG",
    "CREATE_FAULTS",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "FAULT_KINDS",
    "LOOKUP_FAULTS",
    "MAX_BULK_ITEMS",
    "Fate",
    "Sandbox",
    "ServerCounts",
    "activity_setting",
    "draw_fate",
    "parse_altered",
    "parse_faults",
    "parse_latency",
    "parse_tail",
    "serve",
]
