"""``bulkpost types``: reading "Get List of Activity Types" (pure), and the command against the
sandbox, as a table and as JSON, for every type and for one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.hosts import REGIONS
from bulkpost.onboarding.activity_types import ListedType, parse_activity_types, render_list, table
from bulkpost.onboarding.region import URLS_ENV
from bulkpost.sandbox.validation import CATALOG
from tests.conftest import SandboxProcess, read_results, run_cli, write_csv

LEAD = "9e3779b9-7f4a-4c15-b39c-c0605cedc834"

FORM = [
    {"SchemaName": "mx_Custom_1", "DisplayName": "Order No", "DataType": "String",
     "IsMandatory": True},
    {"SchemaName": "mx_Custom_2", "DisplayName": "Channel", "DataType": "Dropdown",
     "IsMandatory": False, "OptionSet": json.dumps([{"Value": "Web"}, {"Value": "Store"}])},
]
# The documented shape: a list, ActivityProperties a JSON string holding FormMetaData.
DOCUMENTED = [
    {"ActivityEvent": 212, "ActivityEventName": "Visit", "DisplayName": "Site Visit",
     "EventType": 1, "ActivityProperties": json.dumps({"FormMetaData": FORM})},
    {"ActivityEvent": 21, "ActivityEventName": "Inbound Phone Call Activity",
     "DisplayName": "Inbound Phone Call Activity", "EventType": 0},
]


def test_the_documented_shape() -> None:
    visit, call = sorted(parse_activity_types(DOCUMENTED), key=lambda t: -t.code)
    assert (visit.code, visit.name, visit.field_count) == (212, "Site Visit", 2)
    assert [spec.schema_name for spec in visit.mandatory] == ["mx_Custom_1"]
    assert visit.fields is not None and visit.fields[1].options == ("Web", "Store")
    assert visit.fields[1].data_type == "Dropdown" and not visit.fields[1].mandatory
    # No form metadata: the count is unknown, not 0.
    assert (call.code, call.name, call.field_count, call.mandatory) == (
        21, "Inbound Phone Call Activity", None, ())
    assert visit.as_dict() == {"code": 212, "name": "Site Visit", "fields": 2,
                               "mandatory": ["mx_Custom_1"]}
    assert call.as_dict()["fields"] is None


@pytest.mark.parametrize(("properties", "count"), [
    (json.dumps({"FormMetaData": FORM}), 2),  # a JSON string, as documented
    ({"FormMetaData": FORM}, 2),  # an object
    ({"FormMetaData": []}, 0),  # no custom fields: known to be none
    ("", None), ("{not json", None), ("null", None), (json.dumps([1]), None),
    ({"FormMetaData": "mx_Custom_1"}, None), ({"Other": 1}, None), (None, None), (7, None),
])
def test_properties_are_read_tolerantly(properties: Any, count: int | None) -> None:
    listed, = parse_activity_types([{"ActivityEvent": 300, "ActivityEventName": "T",
                                     "ActivityProperties": properties}])
    assert listed.field_count == count


@pytest.mark.parametrize("document", [
    {"ActivityTypes": DOCUMENTED}, {"List": DOCUMENTED}, {"d": DOCUMENTED}, DOCUMENTED])
def test_the_list_may_sit_under_a_key(document: Any) -> None:
    assert [t.code for t in parse_activity_types(document)] == [21, 212]


def test_unreadable_items_are_left_out_and_codes_may_be_digit_strings() -> None:
    listed = parse_activity_types([
        {"ActivityEvent": " 305 ", "ActivityEventName": "From text"},
        {"ActivityEvent": True, "ActivityEventName": "A boolean is no code"},
        {"ActivityEvent": "3a", "ActivityEventName": "Not a code"},
        {"ActivityEventName": "No code at all"}, "a string", None,
        {"ActivityEventCode": 150, "Name": "Old spelling"},
    ])
    assert [(t.code, t.name) for t in listed] == [(150, "Old spelling"), (305, "From text")]
    for document in (None, "text", {"Message": "x"}, 3):
        assert parse_activity_types(document) == []


def test_the_table_is_aligned_and_says_what_an_unknown_count_means() -> None:
    shown = render_list(parse_activity_types(DOCUMENTED)).splitlines()
    assert shown[0].split() == ["code", "name", "fields", "mandatory"]
    columns = [shown[0].index(word) for word in ("name", "fields", "mandatory")]
    assert shown[1].startswith("21 ") and shown[2].startswith("212")
    for line in shown[1:3]:
        assert all(line[at - 2:at] == "  " and line[at] != " " for at in columns), shown
    assert shown[1][columns[1]] == "?" and shown[2][columns[2]:] == "mx_Custom_1 (Order No)"
    assert shown[3].startswith("?: the list gives no fields for this type")
    assert render_list([ListedType(5, "Five", ())]).splitlines()[1].endswith("  -")
    assert render_list([]) == "the account lists no activity types"
    assert table([["a", "bb"], ["ccc", "d"]]) == ["a    bb", "ccc  d"]


# -- the command against the sandbox -----------------------------------------------------------
def test_types_lists_the_sandbox_s_types(make_sandbox: Any) -> None:
    server = make_sandbox()
    done = run_cli("types", "--host", server.url)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["code", "name", "fields", "mandatory"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(map(int, rows)) == {*CATALOG, 201, 202}
    assert rows["301"].split()[1:4] == ["Order", "8", "mx_Custom_1"]
    assert rows["201"].split()[1:] == ["Event", "201", "50", "-"]
    assert server.stats()["lookups"] == 1


def test_types_json_is_one_document(make_sandbox: Any) -> None:
    server = make_sandbox()
    done = run_cli("types", "--json", "--host", server.url)
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)  # the whole of stdout
    assert document["host"] == server.url
    order = next(t for t in document["types"] if t["code"] == 301)
    assert order == {"code": 301, "name": "Order", "fields": 8, "mandatory": ["mx_Custom_1"]}


def test_types_code_shows_one_type_s_fields(make_sandbox: Any) -> None:
    server = make_sandbox()
    done = run_cli("types", "301", "--host", server.url)
    assert done.code == 0, done.stderr
    head, heading, *rows = done.stdout.splitlines()
    assert head == "activity type 301 (Order): 8 custom fields"
    assert heading.split("  ")[0] == "schema name" and "data type" in heading
    channel = next(row for row in rows if row.startswith("mx_Custom_3"))
    assert channel.split()[1:] == ["Channel", "Dropdown", "no", "Web,", "Phone,", "Store"]
    assert rows[0].split()[:5] == ["mx_Custom_1", "Order", "No", "String", "yes"]
    as_json = run_cli("types", "301", "--json", "--host", server.url)
    fields = json.loads(as_json.stdout)["fields"]
    assert fields[0] == {"schema_name": "mx_Custom_1", "display_name": "Order No",
                         "data_type": "String", "mandatory": True, "options": [],
                         "max_length": 12}
    assert fields[2]["options"] == ["Web", "Phone", "Store"]


def test_an_unknown_code_is_a_usage_error(make_sandbox: Any) -> None:
    server = make_sandbox()
    done = run_cli("types", "42", "--host", server.url)
    assert done.code == 2 and done.stdout == ""
    assert "activity type 42: not found in the account" in done.stderr
    assert "bulkpost types lists the account's types" in done.stderr


def test_types_without_keys_or_with_refused_keys(make_sandbox: Any) -> None:
    server = make_sandbox()
    no_keys = run_cli("types", "--host", server.url, LSQ_ACCESS_KEY="")
    assert no_keys.code == 2 and "set LSQ_ACCESS_KEY" in no_keys.stderr
    refused = run_cli("types", "--host", server.url, LSQ_SECRET_KEY="not-the-key")
    assert refused.code == 3 and "401" in refused.stderr
    assert "not-the-key" not in refused.stderr


def test_types_without_host_finds_the_region(tmp_path: Path, make_sandbox: Any) -> None:
    mumbai = make_sandbox(region="api-in21.leadsquared.com")
    singapore = make_sandbox(home_region="api-in21.leadsquared.com")
    urls = dict.fromkeys(REGIONS, singapore.url)
    urls["api-in21.leadsquared.com"] = mumbai.url
    done = run_cli("types", "--json", **{URLS_ENV: json.dumps(urls),
                                         "XDG_CACHE_HOME": str(tmp_path)})
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["host"] == mumbai.url
    assert singapore.stats()["unauthorized"] == 1


@pytest.mark.e2e
def test_a_sandbox_rehearses_the_types_another_printed(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    # `types CODE --json` against "the account" (one sandbox), kept in a file, served by a
    # second sandbox started with --types: its fields, Number and dropdown checks included.
    account = make_sandbox()
    printed = [run_cli("types", str(code), "--json", "--host", account.url)
               for code in (310, 301)]
    assert all(done.code == 0 for done in printed), printed
    purchase, order = (json.loads(done.stdout) for done in printed)
    purchase["code"], order["code"] = 4310, 4301  # codes the sandbox has no type of
    one, both = tmp_path / "purchase.json", tmp_path / "types.json"
    one.write_text(json.dumps(purchase))
    both.write_text(json.dumps([purchase, order]))
    with SandboxProcess("--types", str(both)) as (ready, announcement):
        assert json.loads(ready)["types"] == [4310, 4301]
        assert (f"serving your activity types from {both}: 4310 (Purchase), 4301 (Order)"
                in announcement)
    with SandboxProcess("--types", str(one)) as (ready, _):
        url = json.loads(ready)["sandbox"]
        listed = run_cli("types", "--json", "--host", url)
        assert {"code": 4310, "name": "Purchase", "fields": 7,
                "mandatory": ["mx_Custom_1"]} in json.loads(listed.stdout)["types"]
        again = run_cli("types", "4310", "--json", "--host", url)
        assert json.loads(again.stdout) == purchase  # the round trip keeps every field
        rows = [["P1", LEAD, "12.50", "Web"], ["P2", LEAD, "12,5x", "Web"],
                ["P3", LEAD, "3", "Fax"]]
        data = write_csv(tmp_path / "buys.csv", ["order", "lead", "amount", "channel"], rows)
        mapping = tmp_path / "buys.toml"
        mapping.write_text('[activity]\nevent = 4310\nlead_id_column = "lead"\n'
                           'key_column = "order"\n[fields]\n"Order No" = "order"\n'
                           'Amount = "amount"\n"Sales Channel" = "channel"\n')
        checked = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                          "--host", url, "--rate", "25/5s")
        assert checked.code == 1, checked.stderr
        assert (checked.summary["posted"], checked.summary["invalid"]) == (1, 2)
        errors = {n: r["error"] for n, r in read_results(tmp_path / "r.csv").items()}
        assert "'12,5x' is not a number" in errors[2]
        assert "not one of the options" in errors[3]
        # Unchecked by bulkpost (--no-preflight), the sandbox answers as the account would.
        by_schema = tmp_path / "schema.toml"
        by_schema.write_text(mapping.read_text().replace('"Order No"', "mx_Custom_1")
                             .replace("Amount", "mx_Custom_2")
                             .replace('"Sales Channel"', "mx_Custom_4"))
        # The same rows again, under a new results file: created again, as asked by name (the
        # account's history holds the one posted above).
        sent = run_cli("run", data, "--mapping", by_schema, "--results", tmp_path / "r2.csv",
                       "--host", url, "--no-preflight", "--create-again")
        assert (sent.summary["posted"], sent.summary["rejected"]) == (1, 2), sent.stderr
        refused = {n: r["error"] for n, r in read_results(tmp_path / "r2.csv").items()}
        assert "Amount: '12,5x' is not a number" in refused[2]
        assert "Sales Channel: 'Fax' is not one of the options" in refused[3]


def test_a_types_file_that_is_not_what_types_prints_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"code": 310}))
    done = run_cli("sandbox", "--port", "0", "--types", bad)
    assert done.code == 2
    assert (f"--types {bad}: not what bulkpost types CODE --json prints: the type: expected "
            'an object with "code" and "fields"') in done.stderr
