"""The URL paths the sandbox serves, spelled here and nowhere else on its side.

Owns the LeadSquared paths as the API documents them (``/work/shared/reference``, the API
notes), written out rather than imported from :mod:`bulkpost.delivery.client`: a fake that borrowed
the
client's constants would agree with a wrong one. ``tests/sandbox/test_paths.py`` holds the client's
constants and these routes, each on its own, against the documented paths.
"""

from __future__ import annotations

CREATE = "/v2/ProspectActivity.svc/Create"
BULK_BY_LEAD_ID = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId"
BULK_BY_LEAD_FIELD = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadField"
RETRIEVE = "/v2/ProspectActivity.svc/Retrieve"
ACTIVITY_SETTING = "/v2/ProspectActivity.svc/CustomActivity/GetActivitySetting"
ACTIVITY_DETAILS = "/v2/ProspectActivity.svc/GetActivityDetails"
LEAD_BY_EMAIL = "/v2/LeadManagement.svc/Leads.GetByEmailaddress"
UPDATE = "/v2/ProspectActivity.svc/CustomActivity/Update"
BULK_UPDATE = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Update"
USER_BY_ACCESS_KEY = "/v2/Authentication.svc/UserByAccessKey.Get"
ACTIVITY_TYPES = "/v2/ProspectActivity.svc/ActivityTypes.Get"
# The sandbox's own: not the API's.
STATS = "/_sandbox/stats"
LEDGER = "/_sandbox/ledger"
