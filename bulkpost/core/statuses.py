"""A row's status in the results file: the words a results file, a report and a summary use.

Every line of a results file names one (:mod:`bulkpost.core.results_line`); a row's last line is
its state. What each means for a rerun is :mod:`bulkpost.core.resume`'s.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """A row's state in the results file."""

    POSTED = "posted"
    FAILED = "failed"
    REJECTED = "rejected"
    INVALID = "invalid"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"  # not sent: the history (--history) holds its key, or a repeat
    UPDATED = "updated"  # --on-changed update: the activity its key holds was updated
    FIXED = "fixed"  # loaded from a failures file (run --fixes): never sent from here again
