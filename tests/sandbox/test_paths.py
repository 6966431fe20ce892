"""The client and the sandbox each against the documented URL paths, never against each other.

The sandbox spells its paths itself (:mod:`bulkpost.sandbox.paths`), so a wrong path in the
client fails here even though the sandbox would have agreed with a shared constant.
"""

from __future__ import annotations

import pytest

from bulkpost.delivery import client
from bulkpost.sandbox.app import Sandbox

# From /work/shared/reference/leadsquared-api-notes.md (LeadSquared's API docs, as quoted
# there), written out by hand: (method, path, the notes' section).
DOCUMENTED = {
    "CREATE_PATH": ("POST", "/v2/ProspectActivity.svc/Create", "Hosts and authentication"),
    "BULK_BY_ID_PATH": ("POST", "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId",
                        "Bulk endpoint"),
    "BULK_BY_FIELD_PATH": ("POST",
                           "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadField",
                           "Bulk endpoint (the sibling, ?searchBy=EmailAddress)"),
    "RETRIEVE_PATH": ("POST", "/v2/ProspectActivity.svc/Retrieve",
                      "Reading activities back: Get Activities of a Lead"),
    "ACTIVITY_DETAILS_PATH": ("GET", "/v2/ProspectActivity.svc/GetActivityDetails",
                              "Reading activities back: Get Custom Fields of an Activity"),
    "ACTIVITY_SETTING_PATH": ("GET",
                              "/v2/ProspectActivity.svc/CustomActivity/GetActivitySetting",
                              "Reading an activity type's schema"),
    "UPDATE_PATH": ("POST", "/v2/ProspectActivity.svc/CustomActivity/Update",
                    "Changing activities after they exist: Update an Activity"),
    # The notes name the page ("bulk-update-activities"); its path, as that page gives it.
    "BULK_UPDATE_PATH": ("POST", "/v2/ProspectActivity.svc/Bulk/CustomActivity/Update",
                         "Changing activities after they exist: Update Activities in Bulk"),
    "USER_BY_ACCESS_KEY_PATH": ("GET", "/v2/Authentication.svc/UserByAccessKey.Get",
                                "Account, region and activity types"),
    # The notes name "Get List of Activity Types"; its path, as public clients call it.
    "ACTIVITY_TYPES_PATH": ("GET", "/v2/ProspectActivity.svc/ActivityTypes.Get",
                            "Account, region and activity types: Get List of Activity Types"),
    # Not in the reference notes: "Get Lead by Email Address" as the open-source LeadSquared
    # clients call it (GET, ?emailaddress=…). The notes should gain it.
    "LEAD_BY_EMAIL_PATH": ("GET", "/v2/LeadManagement.svc/Leads.GetByEmailaddress",
                           "(not in the notes)"),
}


def _client_paths() -> dict[str, str]:
    return {name: value for name, value in vars(client).items()
            if name.endswith("_PATH") and isinstance(value, str)}


def _sandbox_routes() -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical)
            for route in Sandbox().app.router.routes()
            if route.resource is not None and route.method != "HEAD"}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_the_client_calls_the_documented_path(name: str) -> None:
    _, path, _ = DOCUMENTED[name]
    assert _client_paths()[name] == path


def test_the_client_has_no_undocumented_path() -> None:
    assert set(_client_paths()) == set(DOCUMENTED)


def test_the_sandbox_serves_exactly_the_documented_paths_and_its_own() -> None:
    documented = {(method, path) for method, path, _ in DOCUMENTED.values()}
    routes = _sandbox_routes()
    own = {route for route in routes if route[1].startswith("/_sandbox/")}
    assert routes - own == documented
    assert own == {("GET", "/_sandbox/stats"), ("GET", "/_sandbox/ledger")}

