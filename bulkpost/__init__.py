"""bulkpost: load activities into LeadSquared CRM in bulk, at the full rate limit, resumably.

The package is a pure core (mapping rows to requests, classifying responses, planning a
resume) wrapped by a thin shell (reading files, HTTP, the results log, the worker pool, the
CLI). This module only re-exports the public names.
"""

from bulkpost.api import run, run_async
from bulkpost.core.summary import Summary
from bulkpost.errors import AbortRun, BulkpostError, InputError, Locked, MappingError, UsageError

__version__ = "0.1.0"

__all__ = [
    "AbortRun",
    "BulkpostError",
    "InputError",
    "Locked",
    "MappingError",
    "Summary",
    "UsageError",
    "__version__",
    "run",
    "run_async",
]
