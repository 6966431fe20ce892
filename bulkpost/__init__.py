"""bulkpost: load activities into LeadSquared CRM in bulk, at the full rate limit, resumably.

The package is a pure core (mapping rows to requests, classifying responses, planning a
resume) wrapped by a thin shell (reading files, HTTP, the results log, the worker pool, the
CLI). This module only re-exports the public names: the Python API (:mod:`bulkpost.api`),
the types its callers pass and get back, and the errors it raises.
"""

from importlib.metadata import PackageNotFoundError, version

from bulkpost.api import configure_logging, run, run_async
from bulkpost.core.allowance import RateSpec
from bulkpost.core.mapping import Mapping
from bulkpost.core.options import Mode, OnChanged
from bulkpost.core.share import ShareSchedule
from bulkpost.core.summary import Summary
from bulkpost.errors import AbortRun, BulkpostError, InputError, Locked, MappingError, UsageError

try:
    __version__ = version("bulkpost")
except PackageNotFoundError:  # a source tree on sys.path, never installed: no metadata
    __version__ = "0+unknown"

__all__ = [
    "AbortRun",
    "BulkpostError",
    "InputError",
    "Locked",
    "Mapping",
    "MappingError",
    "Mode",
    "OnChanged",
    "RateSpec",
    "ShareSchedule",
    "Summary",
    "UsageError",
    "__version__",
    "configure_logging",
    "run",
    "run_async",
]
