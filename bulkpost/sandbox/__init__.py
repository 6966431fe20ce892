"""A LeadSquared look-alike on loopback, for the demo and the tests.

A fake with real behaviour, not a mock: the real Create, bulk Create and look-up paths, auth,
the API's validation and error bodies, a strict sliding-window rate limit per access key,
latency in three parts (the request's trip before the window counts it, the answer's
latency, a tail of slower answers) and faults, each call's drawn from its own seeded stream,
so that a seed replays a run. The look-ups answer in a :class:`~bulkpost.sandbox.dialect.Dialect`
(``classic`` by default).

Each part owns one job (the sandbox imports only the core and errors):

- :mod:`~bulkpost.sandbox.app`: the HTTP application, its endpoints, serving it;
- :mod:`~bulkpost.sandbox.paths`: the documented URL paths it serves;
- :mod:`~bulkpost.sandbox.gate`: auth, the windows, fates and faults played out over HTTP;
- :mod:`~bulkpost.sandbox.faults`: fault kinds, the owed schedule, per-call fate streams;
- :mod:`~bulkpost.sandbox.store`: the ledger, what is stored, the look-ups' answers;
- :mod:`~bulkpost.sandbox.validation`: the activity types and the checks of a create;
- :mod:`~bulkpost.sandbox.stats`: the counters ``GET /_sandbox/stats`` serves;
- :mod:`~bulkpost.sandbox.dialect`: how the look-ups show stored activities back.
"""
