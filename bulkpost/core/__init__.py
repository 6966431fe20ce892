"""The core: what bulkpost decides, with no I/O.

A row mapped to an activity (``mapping``, ``activity``, ``values``, ``schema``), what an
answer means (``response``), what was created before (``reconcile``, ``calibration``), what
to do with a row (``resume``, ``planner``), delivery's state machines (``attempts``), the
account's rate limit as the answers prove it (``allowance``, ``share``), a results line
(``results_line``), a row's status (``statuses``), a run's options and counts (``options``,
``summary``), the keys (``credentials``) and the regional hosts (``hosts``).

May import: the standard library's pure parts, ``bulkpost.errors`` and ``bulkpost.core``.
Never asyncio, aiohttp, sqlite3, files or sockets (``tests/test_layers.py`` holds this).
"""
