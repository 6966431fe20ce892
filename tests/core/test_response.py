"""What an API answer means: posted, rate limited, rejected, retried or fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bulkpost.core.allowance import RateSpec, said_limit
from bulkpost.core.bulk_response import classify_bulk
from bulkpost.core.response import (
    MAX_RETRY_AFTER,
    MISSING,
    Classified,
    Verdict,
    classify,
    classify_read,
    classify_update,
    parse_retry_after,
    proves_refusal,
    transport_failure,
)

NOW = datetime(2015, 10, 21, 7, 26, 30, tzinfo=UTC)
ACTIVITY_ID = "a1b2c3d4-0000-4000-8000-000000000001"


def js(document: Any) -> bytes:
    return json.dumps(document).encode()


def mx(exception_type: str, message: str = "") -> bytes:
    return js({"Status": "Error", "ExceptionType": exception_type,
               "ExceptionMessage": message})


NO_ID = "HTTP 200 without a Success status and a well-formed activity Id"
SUCCESS = js({"Status": "Success", "Message": {"Id": ACTIVITY_ID}})
RATE_LIMIT = mx("MXAPIRateLimitExceededException", "API calls exceeded the limit of 25 in 5 s")


def test_success_with_an_activity_id_is_posted() -> None:
    assert classify(200, {}, SUCCESS) == Classified(
        Verdict.POSTED, 200, activity_id=ACTIVITY_ID)


@pytest.mark.parametrize(
    "document",
    [
        {"Status": "Success"},
        {"Status": "Success", "Message": {}},
        {"Status": "Success", "Message": {"Id": ""}},
        {"Status": "Success", "Message": {"Id": None}},
        {"Status": "Success", "Message": {"Id": 12345}},
        {"Status": "Success", "Message": {"Id": "   "}},  # blank: proves no create
        {"Status": "Success", "Message": {"Id": f"{ACTIVITY_ID}\n"}},  # would be stored altered
        {"Status": "Success", "Message": {"Id": f" {ACTIVITY_ID}"}},
        {"Status": "Success", "Message": {"Id": "a b"}},
        {"Status": "Success", "Message": {"Id": "x" * 129}},
        {"Status": "Success", "Message": ACTIVITY_ID},
        {"Status": "success", "Message": {"Id": ACTIVITY_ID}},
        {"Status": "Error", "Message": {"Id": ACTIVITY_ID}},
        {"Message": {"Id": ACTIVITY_ID}},
        {},
        [],
        "Success",
    ],
)
def test_http_200_without_success_and_an_id_is_retried(document: Any) -> None:
    result = classify(200, {}, js(document))
    assert result.verdict is Verdict.RETRY
    assert result.activity_id == ""
    assert result.error_type == "HTTP 200"
    assert result.error == "HTTP 200 without a Success status and a well-formed activity Id"
    assert result.uncertain  # it may have been created: looked up before any re-send


@pytest.mark.parametrize("status", [201, 202, 204])
def test_success_under_another_2xx_is_posted(status: int) -> None:
    # Retrying a success body would create a duplicate: the body is what counts.
    assert classify(status, {}, SUCCESS).verdict is Verdict.POSTED


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_stops_the_run_and_is_never_followed(status: int) -> None:
    result = classify(status, {"Location": "http://elsewhere.example/"}, b"")
    assert result.verdict is Verdict.FATAL and "elsewhere.example" in result.error


def test_403_stops_the_run() -> None:
    assert classify(403, {}, b"Forbidden").verdict is Verdict.FATAL


# -- the rate-limit sentence, in every form real accounts answered it --------------------
SENTENCE = "API calls exceeded the limit of 10 in 5 second(s)"


def _every_call(status: int, body: bytes) -> list[Classified]:
    """The answer as a create, an update, a look-up and a bulk call classify it."""
    return [classify(status, {}, body), classify_update(status, {}, body, ACTIVITY_ID),
            classify_read(status, {}, body)[0], classify_bulk(status, {}, body, 2)[0]]


@pytest.mark.parametrize(("status", "body", "error_type"), [
    (403, SENTENCE.encode(), "HTTP 403"),  # "the 11th call comes back as 403 '…'"
    (403, f"  {SENTENCE}\r\n".encode(), "HTTP 403"),
    (403, js({"Status": "Error", "ExceptionMessage": SENTENCE}), "HTTP 403"),
    (403, js({"Message": SENTENCE}), "HTTP 403"),
    (403, mx("MXAPIRateLimitExceededException", SENTENCE), "MXAPIRateLimitExceededException"),
    (200, mx("MXAPIRateLimitExceededException", SENTENCE), "MXAPIRateLimitExceededException"),
    (200, js({"Status": "Error", "ExceptionMessage": SENTENCE}), "HTTP 200"),
    (200, js({"Message": SENTENCE}), "HTTP 200"),
    (200, SENTENCE.encode(), "HTTP 200"),
    (500, js(SENTENCE), "HTTP 500"),
    (200, js(SENTENCE), "HTTP 200"),
    (429, SENTENCE.encode(), "HTTP 429"),
])
def test_the_rate_limit_sentence_is_rate_limited_under_any_status(
        status: int, body: bytes, error_type: str) -> None:
    for answer in _every_call(status, body):
        assert answer == Classified(Verdict.RATE_LIMITED, status, error_type=error_type,
                                    error=SENTENCE)
        assert said_limit(answer.error) == RateSpec(10, 5.0)  # read alike in every form


@pytest.mark.parametrize(("body", "verdict"), [
    (b"Forbidden", Verdict.FATAL),
    (js({"Status": "Error", "ExceptionMessage": "Access denied"}), Verdict.FATAL),
    (js({"Status": "Error", "ExceptionMessage": "limit of 10 in 5 second(s)"}), Verdict.FATAL),
    # Another exception type is that exception, whatever its text says.
    (mx("MXInvalidInputException", f"Note: {SENTENCE}"), Verdict.FATAL),
])
def test_a_403_without_the_sentence_stays_fatal(body: bytes, verdict: Verdict) -> None:
    assert classify(403, {}, body).verdict is verdict


def test_the_sentence_in_a_success_or_in_data_is_no_rate_limit() -> None:
    success = js({"Status": "Success", "Message": SENTENCE})  # contradictory: not understood
    assert classify(200, {}, success).verdict is Verdict.RETRY
    page = js({"RecordCount": 1, "ProspectActivities": [
        {"Id": ACTIVITY_ID, "EventCode": 201, "Data": {"ActivityEvent_Note": SENTENCE}}]})
    assert classify_read(200, {}, page)[0].verdict is Verdict.OK


def test_a_bulk_item_with_the_sentence_alone_is_rate_limited() -> None:
    body = js({"Response": [{"RowNumber": 1, "ActivityCreated": False,
                             "ExceptionMessage": SENTENCE},
                            {"RowNumber": 2, "ActivityCreated": True,
                             "ProspectActivityId": ACTIVITY_ID}]})
    call, (first, second) = classify_bulk(200, {}, body, 2)
    assert call.verdict is Verdict.OK
    assert first is not None and first.verdict is Verdict.RATE_LIMITED
    assert said_limit(first.error) == RateSpec(10, 5.0)
    assert second is not None and second.verdict is Verdict.POSTED


@pytest.mark.parametrize(("message", "error"), [
    ("Activity does not exist", f"{MISSING}: Activity does not exist"), ("", MISSING)])
def test_an_unknown_activity_is_a_proven_refusal_saying_missing_or_deleted(
        message: str, error: str) -> None:
    body = mx("MXUnknownProspectActivityException", message)
    expected = Classified(Verdict.REJECTED, 500,
                          error_type="MXUnknownProspectActivityException", error=error)
    assert classify_update(500, {}, body, ACTIVITY_ID) == expected
    assert classify_read(500, {}, body)[0] == expected  # the same on every retry: not one
    item = js({"Response": [{"RowNumber": 1, "IsSuccessful": False, "ExceptionType":
                             "MXUnknownProspectActivityException", "ExceptionMessage": message}]})
    assert classify_bulk(200, {}, item, 1)[1][0] == Classified(
        Verdict.REJECTED, 200, error_type="MXUnknownProspectActivityException", error=error)


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_validation_mx_error_is_a_proven_refusal_whatever_the_status(status: int) -> None:
    result = classify(status, {}, mx("MXInvalidInputException", "Invalid value"))
    assert result == Classified(Verdict.REJECTED, status, error_type="MXInvalidInputException",
                                error="Invalid value")


@pytest.mark.parametrize(("status", "uncertain"), [(200, True), (400, False), (500, True),
                                                   (503, True)])
def test_another_mx_error_proves_a_refusal_only_under_a_4xx(status: int,
                                                            uncertain: bool) -> None:
    # The sandbox's mx-after: the activity was created, then a 500 with an MX body. Only a
    # 4xx, or the validation family, proves that nothing was created.
    result = classify(status, {}, mx("MXUnknownException", "An error occurred after saving"))
    assert result == Classified(Verdict.REJECTED, status, error_type="MXUnknownException",
                                error="An error occurred after saving", uncertain=uncertain)


@pytest.mark.parametrize(("exception_type", "status", "proven"), [
    ("MXInvalidInputException", 500, True),
    ("MXInvalidEntityException", 500, True),
    ("MXUnknownProspectActivityException", 500, True),  # an update of a deleted activity
    ("MXDuplicateEntryException", 500, False),
    ("MXUnknownException", 500, False),
    ("MXInvalid", 500, False),
    ("MXUnknownException", 404, True),
    ("MXUnknownException", None, False),  # a bulk item: no status of its own
])
def test_which_mx_errors_prove_a_refusal(exception_type: str, status: int | None,
                                         proven: bool) -> None:
    assert proves_refusal(exception_type, status) is proven


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (mx("MXInvalidEntityException"), "MXInvalidEntityException"),
        (mx("MXInvalidEntityException", "  Lead\n  not\tfound  "), "Lead not found"),
        (mx("MXInvalidEntityException", "x" * 600), "x" * 500),
        (js({"ExceptionType": "MXInvalidEntityException", "Message": "from Message"}),
         "from Message"),
    ],
)
def test_a_rejection_records_the_message_on_one_line(body: bytes, error: str) -> None:
    result = classify(500, {}, body)
    assert result.verdict is Verdict.REJECTED
    assert result.error == error


@pytest.mark.parametrize(
    ("status", "body", "error_type", "error"),
    [
        (429, b"", "HTTP 429", "rate limit exceeded"),
        (429, b"<html>Too Many Requests</html>", "HTTP 429", "rate limit exceeded"),
        (429, RATE_LIMIT, "MXAPIRateLimitExceededException",
         "API calls exceeded the limit of 25 in 5 s"),
        (200, RATE_LIMIT, "MXAPIRateLimitExceededException",
         "API calls exceeded the limit of 25 in 5 s"),
        (500, RATE_LIMIT, "MXAPIRateLimitExceededException",
         "API calls exceeded the limit of 25 in 5 s"),
        (400, mx("MXAPIRateLimitExceededException"), "MXAPIRateLimitExceededException",
         "rate limit exceeded"),
        (401, RATE_LIMIT, "MXAPIRateLimitExceededException",
         "API calls exceeded the limit of 25 in 5 s"),
    ],
)
def test_rate_limits(status: int, body: bytes, error_type: str, error: str) -> None:
    assert classify(status, {}, body) == Classified(
        Verdict.RATE_LIMITED, status, error_type=error_type, error=error)


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "seconds"),
    [
        (429, b"", "7", 7.0),
        (429, b"", "0", 0.0),
        (500, RATE_LIMIT, "2.5", 2.5),
        (200, RATE_LIMIT, "Wed, 21 Oct 2015 07:28:00 GMT", 90.0),
        (429, b"", "Wed, 21 Oct 2015 07:20:00 GMT", 0.0),
        (429, b"", "soon", None),
    ],
)
def test_a_rate_limit_carries_retry_after(
    status: int, body: bytes, retry_after: str, seconds: float | None
) -> None:
    result = classify(status, {"Retry-After": retry_after}, body, now=NOW)
    assert result.verdict is Verdict.RATE_LIMITED
    assert result.retry_after == seconds


@pytest.mark.parametrize("status", [200, 400, 500, 503])
def test_retry_after_is_ignored_when_not_rate_limited(status: int) -> None:
    result = classify(status, {"Retry-After": "30"}, mx("MXInvalidEntityException"))
    assert result.verdict is Verdict.REJECTED
    assert result.retry_after is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b"", "no body"),
        (503, b"", "no body"),
        (500, b"   ", "no body"),
        (502, b"<html><body>502 Bad Gateway</body></html>",
         "HTML page instead of JSON (gateway error)"),
        (504, b"\n  <!DOCTYPE html><html>Gateway Time-out</html>",
         "HTML page instead of JSON (gateway error)"),
        (200, b"<html>maintenance</html>", "HTML page instead of JSON (gateway error)"),
        (503, b"Service Unavailable", "Service Unavailable"),
        (500, b"{not json", "{not json"),
        (500, js({"Message": "An error has occurred."}), "An error has occurred."),
        (500, js({"ExceptionType": "System.NullReferenceException",
                  "ExceptionMessage": "Object reference not set"}), "Object reference not set"),
        (500, b"line one\r\n\tline two", "line one line two"),
        (200, b"", NO_ID),
        (200, b"{garbage", NO_ID),
        (200, b"\xff\xfe\x00garbage", NO_ID),
        (408, b"", "no body"),
        (425, b"Too Early", "Too Early"),
    ],
)
def test_uncertain_answers_are_retried(status: int, body: bytes, error: str) -> None:
    assert classify(status, {}, body) == Classified(
        Verdict.RETRY, status, error_type=f"HTTP {status}", error=error, uncertain=True)


def test_a_long_retry_reason_is_cut_to_500_characters() -> None:
    assert classify(502, {}, b"y" * 2000).error == "y" * 500


def test_a_deeply_nested_body_does_not_raise() -> None:
    assert classify(502, {}, b"[" * 100_000).verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("status", "body", "error_type", "mentions"),
    [
        (401, b"", "HTTP 401", "LSQ_ACCESS_KEY"),
        (401, mx("MXUnAuthorisedException", "Invalid keys"), "MXUnAuthorisedException", "--host"),
        (401, SUCCESS, "HTTP 401", "(401)"),
        # The wrong region, and its answer names the keys' own: say which host to use.
        (401, mx("MXUnAuthorisedException", "Use API-IN21.leadsquared.com for this account"),
         "MXUnAuthorisedException", "belong to api-in21.leadsquared.com (India, Mumbai): use "
                                    "--host api-in21.leadsquared.com"),
        # A host that is not a documented one is not repeated.
        (401, mx("MXUnAuthorisedException", "Use evil.leadsquared.com.example.org"),
         "MXUnAuthorisedException", "check LSQ_ACCESS_KEY"),
        (404, b"<html>Not Found</html>", "HTTP 404", "--host"),
        (404, mx("MXInvalidEntityException"), "MXInvalidEntityException", "(404)"),
    ],
)
def test_wrong_keys_or_url_are_fatal(
    status: int, body: bytes, error_type: str, mentions: str
) -> None:
    result = classify(status, {}, body)
    assert result.verdict is Verdict.FATAL
    assert result.http_status == status
    assert result.error_type == error_type
    assert mentions in result.error


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, b"Bad Request", "Bad Request"),
        (400, js({"Message": "The request is invalid."}), "The request is invalid."),
        (413, b"<html>Request Entity Too Large</html>", "<html>Request Entity Too Large</html>"),
        (422, js({"Status": "Error"}), '{"Status": "Error"}'),
    ],
)
def test_other_4xx_without_an_mx_type_are_rejected(status: int, body: bytes, error: str) -> None:
    assert classify(status, {}, body) == Classified(
        Verdict.REJECTED, status, error_type=f"HTTP {status}", error=error)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 90.0),
        ("Wed, 21 Oct 2015 07:28:00 +0000", 90.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 90.0),  # no zone given: read as UTC
        ("Wed, 21 Oct 2015 09:28:00 +0200", 90.0),
        ("Wed, 21 Oct 2015 07:26:30 GMT", 0.0),
        ("Tue, 20 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("30s", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("2015-10-21T07:28:00Z", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_without_now_uses_the_clock() -> None:
    from email.utils import format_datetime

    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(soon)
    assert seconds is not None and 110 < seconds <= 120
    assert parse_retry_after("Fri, 31 Dec 2010 23:59:59 GMT") == 0.0  # in the past


@pytest.mark.parametrize("value", ["86400", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_parse_retry_after_is_capped_at_an_hour(value: str) -> None:
    assert parse_retry_after(value, NOW) == MAX_RETRY_AFTER == 3600.0


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "nan"])
def test_parse_retry_after_refuses_non_finite_numbers(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_transport_failure_is_an_uncertain_retry() -> None:
    assert transport_failure("ServerTimeoutError", "Timeout on reading\n  data from socket") == (
        Classified(Verdict.RETRY, None, error_type="ServerTimeoutError",
                   error="Timeout on reading data from socket", uncertain=True))


def test_a_connection_that_never_opened_is_a_certain_retry() -> None:
    assert not transport_failure("connect error", "refused", uncertain=False).uncertain


@pytest.mark.parametrize(("body", "ok"), [
    (b'{"RecordCount":0,"ProspectActivities":[]}', True),
    (b'[{"ProspectID":"x"}]', True),
    (b"[]", True),
    (b'{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"x"}',
     False),
    (b"<html>502</html>", False),
    (b"", False),
])
def test_classify_read(body: bytes, ok: bool) -> None:
    verdict, document = classify_read(200, {}, body)
    assert (verdict.verdict is Verdict.OK) is ok
    assert (document is not None) is ok
    assert not verdict.uncertain  # a look-up creates nothing


def test_classify_read_rate_limited_and_fatal() -> None:
    limited, _ = classify_read(200, {}, b'{"ExceptionType":"MXAPIRateLimitExceededException"}')
    assert limited.verdict is Verdict.RATE_LIMITED
    assert classify_read(401, {}, b"")[0].verdict is Verdict.FATAL


def test_transport_failure_cuts_long_details() -> None:
    assert transport_failure("ClientOSError", "z" * 800).error == "z" * 500
