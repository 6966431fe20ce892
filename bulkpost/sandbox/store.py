"""The activities the sandbox holds, and what look-ups answer of them.

Owns the ledger (memory, and a JSON-lines file if asked), where every created activity goes
with the moment its call arrived, and every update of it under its ``Updates``; the indexes
look-ups read (by lead, newest last; by Id; leads created by e-mail); what is kept of a sent
value (a dropdown's own spelling in a typed dialect, the first half of an ``altered`` field,
the sent values then kept under ``Sent``);
the answers of "Get Activities of a Lead", "Get Custom Fields of an Activity" and "Get Lead
by Email Address", rendered by :mod:`bulkpost.sandbox.dialect`; and watches, which let a test act
the
moment the ledger reaches a count; and, for tests, an activity deleted or altered since.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulkpost.core.activity import API_DATETIME_FORMAT
from bulkpost.core.credentials import account_digest
from bulkpost.core.mapping import CUSTOM_FIELD
from bulkpost.errors import UsageError
from bulkpost.sandbox.dialect import (
    Dialect,
    canonical_option,
    page,
    render_activity,
    render_details,
    render_update_log,
)
from bulkpost.sandbox.stats import ServerCounts
from bulkpost.sandbox.validation import BUILT_IN, Catalog

Watch = Callable[[dict[str, Any]], None]


def parse_altered(spec: str) -> frozenset[str]:
    """``"mx_Custom_2,mx_Custom_3"`` → the SchemaNames whose stored value is to differ."""
    names = frozenset(filter(None, (n.strip() for n in spec.split(","))))
    wrong = sorted(n for n in names if not CUSTOM_FIELD.fullmatch(n))
    if wrong:
        raise UsageError(f"--alter-stored: not a custom field SchemaName: {', '.join(wrong)}")
    return names


def shown(entry: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as the sandbox shows it outside (its ``--ledger`` file, its
    ``/_sandbox/ledger``): the keys' account as a digest (``Account``), never the access
    key itself."""
    outside = {name: value for name, value in entry.items() if name != "AccessKey"}
    outside["Account"] = account_digest(entry["AccessKey"])
    return outside


class ActivityStore:
    """Every activity created, in the order created, and the indexes look-ups read."""

    def __init__(self, stats: ServerCounts, *, dialect: Dialect, altered: frozenset[str],
                 ledger: Path | None = None, catalog: Catalog = BUILT_IN) -> None:
        self.stats = stats
        self.catalog = catalog
        self.dialect = dialect
        self.altered = altered
        self.ledger: list[dict[str, Any]] = []
        self.by_lead: dict[str, list[dict[str, Any]]] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._leads_by_email: dict[str, str] = {}
        self._watches: list[tuple[int, Watch]] = []
        self._update_watches: list[tuple[int, Watch]] = []
        self._file = open(ledger, "a", encoding="utf-8") if ledger else None  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def watch(self, count: int, action: Watch) -> None:
        """Call ``action`` once, with the entry that brings the ledger to ``count`` entries
        or more, the moment it is stored: before its call is answered, and before any later
        item of its bulk call is stored."""
        self._watches.append((count, action))

    def watch_updates(self, count: int, action: Watch) -> None:
        """As :meth:`watch`, for the updates made: ``action`` gets the updated entry the
        moment the ``count``-th update is made, before its call is answered."""
        self._update_watches.append((count, action))

    def record(self, access_key: str, activity_id: str, body: dict[str, Any],
               arrived: float, bulk: bool = False) -> dict[str, Any]:
        """Store what a valid create (or bulk item) ``body`` creates; return the entry."""
        self.stats.created += 1
        if self.stats.first_created is None:
            self.stats.first_created = arrived
        elif self.stats.second_created is None:
            self.stats.second_created = arrived
        self.stats.last_created = arrived
        lead_id: str | None = body.get("RelatedProspectId")
        if lead_id is None:
            # No lead has this e-mail yet: the API creates one (validated: it is a string).
            email = str(body["EmailAddress"]).strip().lower()
            lead_id = self._leads_by_email.setdefault(
                email, str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + email)))
        lead_id = lead_id.lower()
        sent = {f["SchemaName"]: f["Value"] for f in body.get("Fields", [])}
        specs = {f["SchemaName"]: f for f in self.catalog.setting_of(body)["Fields"]}
        stored = {name: self._stored(name, value, specs.get(name))
                  for name, value in sent.items()}
        entry: dict[str, Any] = {
            "Id": activity_id,
            "LeadId": lead_id,
            "CreatedOn": body.get("ActivityDateTime") or time.strftime(
                API_DATETIME_FORMAT, time.gmtime(arrived)),
            "RelatedProspectId": body.get("RelatedProspectId"),
            "EmailAddress": body.get("EmailAddress"),
            "ActivityEvent": body.get("ActivityEvent"),
            "ActivityNote": body.get("ActivityNote"),
            "ActivityDateTime": body.get("ActivityDateTime"),
            "Fields": stored,
            **({"Sent": sent} if stored != sent else {}),
            "AccessKey": access_key,
            "ReceivedAt": arrived,  # when the call arrived, before the latency
            "Bulk": bulk,
        }
        self.ledger.append(entry)
        self._by_id[activity_id] = entry
        self.by_lead.setdefault(lead_id, []).append(entry)
        if self._file is not None:
            self._file.write(json.dumps(shown(entry), ensure_ascii=False) + "\n")
            self._file.flush()
        due = [w for w in self._watches if w[0] <= len(self.ledger)]
        for watch in due:
            self._watches.remove(watch)
            watch[1](entry)
        return entry

    def activity(self, activity_id: Any, access_key: str) -> dict[str, Any] | None:
        """The key's activity with this Id, or None."""
        entry = self._by_id.get(activity_id.strip().lower()) if isinstance(
            activity_id, str) else None
        return entry if entry is not None and entry["AccessKey"] == access_key else None

    def update(self, entry: dict[str, Any], body: dict[str, Any], arrived: float,
               bulk: bool = False) -> None:
        """Carry out a valid update of ``entry``: its note (when the body has one) and the
        fields the body names change; the change is kept under the entry's ``Updates`` and
        appended to the ledger file (a line naming the activity in ``UpdateOf``)."""
        self.stats.updated += 1
        sent = {f["SchemaName"]: f["Value"] for f in body.get("Fields", [])}
        specs = {f["SchemaName"]: f for f in self.catalog.setting_of(entry)["Fields"]}
        stored = {name: self._stored(name, value, specs.get(name))
                  for name, value in sent.items()}
        change: dict[str, Any] = {"ReceivedAt": arrived, "Bulk": bulk, "Fields": stored}
        before: dict[str, Any] = {"Fields": {name: entry["Fields"].get(name, "")
                                             for name in stored}}
        if "ActivityNote" in body:
            before["ActivityNote"] = entry["ActivityNote"]
            change["ActivityNote"] = entry["ActivityNote"] = body["ActivityNote"]
        if stored != sent or "Sent" in entry:  # what was sent, where the store keeps less
            entry["Sent"] = {**entry.get("Sent", entry["Fields"]), **sent}
        entry["Fields"] = {**entry["Fields"], **stored}
        if self._file is not None:
            self._file.write(json.dumps({"UpdateOf": entry["Id"], **change},
                                        ensure_ascii=False) + "\n")
            self._file.flush()
        entry.setdefault("Updates", []).append({**change, "Before": before})
        due = [w for w in self._update_watches if w[0] <= self.stats.updated]
        for watch in due:
            self._update_watches.remove(watch)
            watch[1](entry)

    def delete(self, activity_id: str) -> None:
        """The activity deleted in the CRM since (tests): no look-up shows it any more; the
        ledger keeps the record of its creation."""
        entry = self._by_id.pop(activity_id.strip().lower())
        self.by_lead[entry["LeadId"]].remove(entry)

    def alter(self, activity_id: str, fields: dict[str, str] | None = None,
              note: str | None = None) -> None:
        """Change what the CRM holds of an activity behind bulkpost's back (tests: someone
        edited it, or the CRM kept less): the ``fields`` given, the note when given."""
        entry = self._by_id[activity_id.strip().lower()]
        entry["Fields"] = {**entry["Fields"], **(fields or {})}
        if note is not None:
            entry["ActivityNote"] = note

    def _stored(self, name: str, value: str, spec: dict[str, Any] | None) -> str:
        """What the sandbox keeps of a sent value: a dropdown's own spelling in a typed
        dialect, and the first half of an ``altered`` field's value."""
        if self.dialect.typed and spec is not None and spec["DataType"] == "Dropdown":
            value = canonical_option(spec, value) or value
        return value[:len(value) // 2] if name in self.altered else value

    # -- look-ups --------------------------------------------------------------------------
    def activities_page(self, lead_id: str, event: int | None, offset: int,
                        count: int) -> dict[str, Any]:
        """"Get Activities of a Lead": newest first, of ``event`` (None: every event), the
        page ``offset`` and ``count`` name as the dialect counts."""
        entries = [e for e in reversed(self.by_lead.get(lead_id.lower(), []))
                   if event is None or e["ActivityEvent"] == event]
        rows: list[tuple[float, dict[str, Any], dict[str, Any] | None]] = []
        for entry in entries:
            if self.dialect.update_log:  # each update's log row, newest first
                rows += [(float(change["ReceivedAt"]), entry, change)
                         for change in reversed(entry.get("Updates", []))]
            rows.append((float(entry["ReceivedAt"]), entry, None))
        rows.sort(key=lambda row: -row[0])  # stable: ties keep the newest-first order
        items, record_count = page(rows, offset, count, self.dialect)
        return {"RecordCount": record_count, "ProspectActivities": [
            render_activity(e, self.dialect, self.catalog.setting_of(e)) if change is None
            else render_update_log(e, change, self.dialect) for _, e, change in items]}

    def details(self, activity_id: str, access_key: str) -> dict[str, Any] | None:
        """"Get Custom Fields of an Activity", or None when the activity is not the key's."""
        entry = self._by_id.get(activity_id.strip().lower())
        if entry is None or entry["AccessKey"] != access_key:
            return None
        return render_details(entry, self.dialect, self.catalog.setting_of(entry))

    def leads_by_email(self, email: str) -> list[dict[str, Any]]:
        """"Get Lead by Email Address": a list with the lead, or an empty list."""
        email = email.strip().lower()
        lead_id = self._leads_by_email.get(email)
        return [{"ProspectID": lead_id, "EmailAddress": email}] if lead_id else []
