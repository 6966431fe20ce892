"""Getting to know an account and an export before the first load: the account's region and
time zone, its activity types, and ``init``'s sampling, column matching and drafting of a
mapping file.

May import: ``bulkpost.core``, ``bulkpost.reading``, ``bulkpost.storage``,
``bulkpost.delivery`` and ``bulkpost.errors``.
"""
