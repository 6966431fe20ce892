"""The run's share of the rate limit (``--share``): the schedule as a pure object, and the
limit taking a fraction on the virtual clock (the harness of tests/core/test_allowance.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.allowance import RateSpec
from bulkpost.core.share import ShareSchedule, share_of
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.errors import UsageError
from tests.clock import run_virtual
from tests.core.test_allowance import MARGIN, Account, learning_limit, post

DAY = datetime(2026, 3, 2)


def at(hours: int, minutes: int = 0) -> datetime:
    return DAY + timedelta(hours=hours, minutes=minutes)


def test_a_bare_percentage_is_the_whole_day() -> None:
    share = ShareSchedule.parse("60%")
    assert not share.timed and share.rest == 0.6
    assert share.fraction_at(at(3)) == share.fraction_at(at(15)) == 0.6
    assert share.next_change(at(3)) is None
    assert str(share) == "60%"


def test_ranges_and_the_rest_of_the_day() -> None:
    share = ShareSchedule.parse("09:00-19:00=40%, 100%")
    assert share.timed and share.most == 1.0
    assert share.fraction_at(at(8, 59)) == 1.0
    assert share.fraction_at(at(9)) == 0.4
    assert share.fraction_at(at(18, 59)) == 0.4
    assert share.fraction_at(at(19)) == 1.0
    assert share.next_change(at(8)) == at(9)
    assert share.next_change(at(12)) == at(19)
    assert share.next_change(at(20)) == at(24 + 9)
    assert str(share) == "09:00-19:00=40%,100%"


def test_a_range_may_wrap_midnight_and_the_rest_defaults_to_all() -> None:
    share = ShareSchedule.parse("22:00-06:00=100%,08:00-20:00=30%")
    assert share.rest == 1.0
    assert share.fraction_at(at(23)) == share.fraction_at(at(2)) == 1.0
    assert share.fraction_at(at(7)) == 1.0
    assert share.fraction_at(at(12)) == 0.3
    assert share.next_change(at(21)) == at(24 + 8)  # 20:00-08:00 is all 100%
    assert ShareSchedule.parse("18:00-24:00=50%").fraction_at(at(23, 59)) == 0.5


@pytest.mark.parametrize(("text", "says"), [
    ("0%", "more than 0%"), ("120%", "at most 100%"), ("60", "expected a percentage"),
    ("", "expected a percentage"), ("09:00-19:00=40%,,100%", "expected a percentage"),
    ("25:00-26:00=50%", "not a time of day"), ("09:60-10:00=50%", "not a time of day"),
    ("09:00-19:00", "expected HH:MM-HH:MM=P%"), ("9-17=50%", "expected HH:MM-HH:MM=P%"),
    ("09:00-19:00=40%,12:00-13:00=10%", "overlap"),
    ("22:00-06:00=40%,05:00-07:00=10%", "overlap"),
    ("50%,09:00-10:00=10%", "comes last"), ("10:00-10:00=50%", "empty"),
    ("09:00-19:00=0%", "more than 0%"),
])
def test_a_bad_share_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as raised:
        ShareSchedule.parse(text)
    assert "--share" in str(raised.value)


def test_the_calls_per_window_are_floored_and_at_least_one() -> None:
    assert share_of(25, 0.4) == 10 and share_of(25, 0.6) == 15 and share_of(2, 0.3) == 1
    assert share_of(72, 1.0) == 72 and share_of(10, 0.999) == 9


def test_the_time_to_finish_integrates_the_schedule() -> None:
    share = ShareSchedule.parse("09:00-19:00=40%,100%")
    # 10 per second at 100%, 4 at 40%: from 08:00, one hour at 10/s (36,000), then 40%.
    assert share.seconds_for(36_000, 10.0, at(8)) == pytest.approx(3600)
    assert share.seconds_for(36_000 + 4 * 600, 10.0, at(8)) == pytest.approx(4200)
    # From 18:00, an hour at 4/s (14,400), the rest at 10/s after 19:00.
    assert share.seconds_for(14_400 + 10_000, 10.0, at(18)) == pytest.approx(4600)
    # A whole day and more: the 40% range comes round again.
    day = 10 * 14 * 3600 + 4 * 10 * 3600
    assert share.seconds_for(day + 100, 10.0, at(19)) == pytest.approx(86_400 + 10)
    assert ShareSchedule.parse("50%").seconds_for(100, 10.0, at(3)) == pytest.approx(20)


def most_in_a_window(arrivals: list[float], period: float) -> int:
    most, first = 0, 0
    for last, t in enumerate(arrivals):
        while arrivals[first] <= t - period:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_40_percent_share_of_25_never_holds_more_than_10_and_uses_them() -> None:
    account = Account(25, 5.0)
    limit = learning_limit()
    limit_with_share = RateLimit(limit.spec, MARGIN, limit.allowance, fraction=lambda _t: 0.4)
    run_virtual(post(limit_with_share, account, 300))
    assert most_in_a_window(sorted(account.ours), 5.0) <= 10
    assert account.used(0, 1e9) * 25 / 10 >= 0.95
    # Below a whole share, the run never probes above the ceiling.
    assert account.refused == 0 and limit.allowance.ceiling == 25
    assert not limit.allowance.probing


class Switch:
    """40% for the first minute of the run, then all of it."""

    def __init__(self) -> None:
        self.begin: float | None = None

    def __call__(self, now: float) -> float:
        if self.begin is None:
            self.begin = now
        return 0.4 if now - self.begin < 60 else 1.0


def test_a_schedule_switching_from_40_to_100_percent_switches_within_a_window() -> None:
    account = Account(25, 5.0)
    limit = RateLimit(RateSpec(25, 5.0), MARGIN, fraction=Switch())
    run_virtual(post(limit, account, 1200))
    ours = sorted(account.ours)
    before = [t for t in ours if t < 60]
    assert most_in_a_window(before, 5.0) <= 10
    assert len([t for t in ours if 50 <= t < 60]) >= 19  # 10 per window, used
    # Within a window (5.1 s) of the switch, the full rate: 25 per window after it.
    assert len([t for t in ours if 65.2 <= t < 70.2]) >= 24
    assert most_in_a_window(ours, 5.0) <= 25 and account.refused == 0


def as_text(share: str) -> dict[str, Any]:
    """``share=`` as the Python API passes it on (its keywords are untyped)."""
    return {"share": share}


def test_the_python_api_takes_the_share_as_text(tmp_path: Path) -> None:
    from bulkpost.core.options import RunOptions
    from bulkpost.reading.mapping_file import load_mapping
    from tests.conftest import KEYED_MAPPING

    mapping_file = tmp_path / "mapping.toml"
    mapping_file.write_text(KEYED_MAPPING)
    options = RunOptions(input=tmp_path / "in.csv", mapping=load_mapping(mapping_file),
                         results=tmp_path / "r.csv", daily_calls=100,
                         **as_text("22:00-06:00=100%,50%"))
    assert isinstance(options.share, ShareSchedule) and options.needs_zone
    with pytest.raises(UsageError, match="share= '0%'"):
        RunOptions(input=tmp_path / "in.csv", mapping=load_mapping(mapping_file),
                   results=tmp_path / "r.csv", **as_text("0%"))
    with pytest.raises(UsageError, match="budget is at least one call"):
        RunOptions(input=tmp_path / "in.csv", mapping=load_mapping(mapping_file),
                   results=tmp_path / "r.csv", daily_calls=0)
