"""The command line: ``bulkpost`` and its commands (``run``, ``validate``, ``init``, ``types``,
``check``, ``report``, ``verify``, ``history``, ``sandbox``); the console entry point is
:func:`bulkpost.cli.main.main`.

May import every layer, and ``bulkpost.api``.
"""
