"""Delivering rows to LeadSquared: the HTTP client, the one call layer under the rate limit,
the stop signal, look-ups, the single and bulk drivers of the core's state machines, the
recorder of each row's outcome, and reading an activity back.

May import: ``bulkpost.core``, ``bulkpost.reading``, ``bulkpost.storage`` and
``bulkpost.errors``.
"""
