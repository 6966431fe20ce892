"""A run from start to end: the pipeline (preflight, feeder, queue, workers), its rate limits
as given or learnt, progress and logs, and ``verify``'s read-back of a whole load.

May import every layer below it: ``core``, ``reading``, ``storage``, ``delivery``,
``onboarding`` and ``bulkpost.errors``.
"""
