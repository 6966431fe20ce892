"""What a run keeps on disk: the results file (its lines, its index in memory, compaction),
the history (a SQLite database: schema, import, reports, the account's own), the lessons
kept for later runs, the day's budget of calls, the locks and checks of output files, and
``report`` and the fix loop, which read them.

May import: ``bulkpost.core``, ``bulkpost.reading`` and ``bulkpost.errors``.
"""
