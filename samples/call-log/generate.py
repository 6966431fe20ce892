"""Regenerate the call-log sample (deterministic): ``python samples/call-log/generate.py``.

A counsellor call log as another CRM exports it: semicolons, UTF-8 with a byte-order mark,
day-first dates and 12-hour times in columns of their own, students by e-mail address,
Hindi in the notes, Asia/Kolkata time. ``calls.csv`` is the first export (1,500 rows, with
rows broken on purpose: README.md lists them); ``nightly-1.csv`` and ``nightly-2.csv`` are
the same CRM's exports on the two nights after it: each the calls of its last eight days,
some of them edited since (note, outcome, duration), and the calls made since.
``counselling-call.json`` is the activity type the calls are loaded as, as ``bulkpost types
450 --json`` prints it, for ``bulkpost sandbox --types``.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import date, datetime, time, timedelta
from pathlib import Path

HERE = Path(__file__).parent
HEADER = ["Call ID", "Call Date", "Call Time", "Student Email", "Counsellor",
          "Duration (sec)", "Outcome", "Notes", "Campus"]
OUTCOMES = ["Interested", "Not Interested", "Call Back", "No Answer"]
COUNSELLORS = ["Anjali Mehta", "Rahul Deshpande", "Sneha Iyer", "Vikram Singh",
               "Fatima Khan", "Arjun Reddy"]
CAMPUSES = ["Pune", "Bengaluru", "Jaipur", "Lucknow"]
FIRST = ["aarav", "vivaan", "aditya", "diya", "ananya", "ishaan", "kavya", "rohan", "saanvi",
         "arnav", "meera", "kabir", "priya", "tanvi", "yash", "nikhil", "pooja", "zoya",
         "harsh", "riya"]
LAST = ["sharma", "verma", "gupta", "nair", "patel", "joshi", "rao", "kulkarni", "das",
        "bose", "mishra", "chauhan", "pillai", "saxena", "khanna"]
NOTES = {
    "Interested": [
        "छात्र बी.टेक (कंप्यूटर साइंस) में रुचि रखता है; brochure भेजा",
        "अभिभावक से बात हुई, फीस की किश्तों के बारे में पूछा",
        "Wants the hostel details; कैंपस विज़िट शनिवार को तय",
        "MBA के लिए scholarship की जानकारी दी, form भरेगी",
    ],
    "Not Interested": [
        "दूसरे कॉलेज में दाखिला ले चुका है",
        "फीस ज़्यादा लगी, \"अगले साल देखेंगे\" कहा",
        "Not looking for a full-time course right now",
    ],
    "Call Back": [
        "शाम 6 बजे के बाद दोबारा कॉल करें",
        "Exam चल रहे हैं, अगले हफ़्ते बात करेंगे",
        "पिताजी से पूछकर बताएगी; call back on Monday",
    ],
    "No Answer": [
        "फ़ोन बंद था",
        "घंटी गई, किसी ने नहीं उठाया",
        "",
    ],
}
# What a counsellor adds to a note when a call is edited in the CRM afterwards.
AMENDED = [" — अपडेट: आवेदन पत्र मिल गया", " — update: fee receipt received",
           " — अपडेट: कैंपस विज़िट हो गई", " — अपडेट: छात्र ने फ़ोन पर पुष्टि की"]
FIRST_DAY = date(2025, 9, 1)
EXPORT_DAYS = 61  # calls.csv: 1 September to 31 October 2025
WINDOW_DAYS = 8   # a nightly export: the calls of its last eight days

# The rows of calls.csv broken on purpose (1-based data rows) and what is wrong with them.
BAD_EMAIL = 101       # an address without its "@"
FEBRUARY_31 = 202     # 31/02/2025
NOT_AN_OUTCOME = 303  # "Voicemail", not one of the dropdown's options
EMPTY_DATES = (404, 505, 606)
REPEATED_ID = (412, 873)   # two different calls exported under one Call ID
EXACT_REPEAT = 950         # the same call exported twice (rows 950 and 951)


def leads(rng: random.Random) -> list[str]:
    names = sorted({f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randrange(1, 99)}"
                    for _ in range(400)})
    domains = ["gmail.com", "yahoo.co.in", "rediffmail.com", "outlook.com"]
    return [f"{name}@{rng.choice(domains)}" for name in names[:300]]


def call(rng: random.Random, number: int, day: date, students: list[str]) -> dict[str, str]:
    outcome = rng.choices(OUTCOMES, weights=[4, 2, 3, 3])[0]
    at = time(rng.randrange(9, 20), rng.randrange(0, 60))
    return {
        "Call ID": f"CL-{number}",
        "Call Date": day.strftime("%d/%m/%Y"),
        "Call Time": datetime.combine(day, at).strftime("%I:%M %p").lstrip("0"),
        "Student Email": rng.choice(students),
        "Counsellor": rng.choice(COUNSELLORS),
        "Duration (sec)": "0" if outcome == "No Answer" else str(rng.randrange(45, 1500)),
        "Outcome": outcome,
        "Notes": rng.choice(NOTES[outcome]),
        "Campus": rng.choice(CAMPUSES),
    }


def calls_of(rng: random.Random, first_number: int, days: list[date], count: int,
             students: list[str]) -> list[dict[str, str]]:
    """``count`` calls spread over ``days``, in the order they were made."""
    made = [call(rng, 0, rng.choice(days), students) for _ in range(count)]
    made.sort(key=lambda c: (datetime.strptime(c["Call Date"], "%d/%m/%Y"),
                             datetime.strptime(c["Call Time"], "%I:%M %p")))
    for offset, row in enumerate(made):
        row["Call ID"] = f"CL-{first_number + offset}"
    return made


def edit(rng: random.Random, row: dict[str, str]) -> None:
    """A counsellor edits a call afterwards: its note, outcome or duration."""
    kind = rng.randrange(3)
    if kind == 0 or not row["Notes"]:
        row["Notes"] = (row["Notes"] or "कॉल हुई") + rng.choice(AMENDED)
    elif kind == 1:
        row["Outcome"] = rng.choice([o for o in OUTCOMES if o != row["Outcome"]])
    else:
        row["Duration (sec)"] = str(int(row["Duration (sec)"]) + rng.randrange(30, 300))


def write(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, delimiter=";", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def nightly(rng: random.Random, crm: dict[str, dict[str, str]], night: int, last_day: date,
            new_calls: int, changed: int, students: list[str]) -> list[dict[str, str]]:
    """The CRM's export on ``night``: the calls of its last eight days (``changed`` of those
    already exported edited since) and ``new_calls`` made on ``last_day``."""
    window = [row for row in crm.values()
              if last_day - timedelta(days=WINDOW_DAYS) < day_of(row) <= last_day]
    for row in rng.sample(sorted(window, key=lambda r: r["Call ID"]), changed):
        edit(rng, row)
    made = calls_of(rng, 100000 + len(crm) + 1, [last_day], new_calls, students)
    crm.update((row["Call ID"], row) for row in made)
    return [dict(row) for row in crm.values()
            if last_day - timedelta(days=WINDOW_DAYS) < day_of(row) <= last_day]


def day_of(row: dict[str, str]) -> date:
    return datetime.strptime(row["Call Date"], "%d/%m/%Y").date()


def main() -> None:
    rng = random.Random(450)
    students = leads(rng)
    days = [FIRST_DAY + timedelta(days=n) for n in range(EXPORT_DAYS)]
    calls = calls_of(rng, 100001, days, 1499, students)
    # The CRM as it is (what later exports hold), before the first export's own faults.
    crm = {row["Call ID"]: dict(row) for row in calls}
    exported = [dict(row) for row in calls]
    exported[BAD_EMAIL - 1]["Student Email"] = \
        exported[BAD_EMAIL - 1]["Student Email"].replace("@", ".")
    exported[FEBRUARY_31 - 1]["Call Date"] = "31/02/2025"
    exported[NOT_AN_OUTCOME - 1]["Outcome"] = "Voicemail"
    for row in EMPTY_DATES:
        exported[row - 1]["Call Date"] = ""
    exported[REPEATED_ID[1] - 1]["Call ID"] = exported[REPEATED_ID[0] - 1]["Call ID"]
    exported.insert(EXACT_REPEAT, dict(exported[EXACT_REPEAT - 1]))
    write(HERE / "calls.csv", exported)
    last = days[-1]
    write(HERE / "nightly-1.csv",
          nightly(rng, crm, 1, last + timedelta(days=1), 24, 30, students))
    write(HERE / "nightly-2.csv",
          nightly(rng, crm, 2, last + timedelta(days=2), 26, 30, students))
    counselling_call = {"code": 450, "name": "Counselling Call", "fields": [
        {"schema_name": "mx_Custom_1", "display_name": "Call ID", "data_type": "String",
         "mandatory": True, "options": [], "max_length": 20},
        {"schema_name": "mx_Custom_2", "display_name": "Counsellor", "data_type": "String",
         "mandatory": False, "options": [], "max_length": 100},
        {"schema_name": "mx_Custom_3", "display_name": "Duration", "data_type": "Number",
         "mandatory": False, "options": [], "max_length": None},
        {"schema_name": "mx_Custom_4", "display_name": "Outcome", "data_type": "Dropdown",
         "mandatory": False, "options": OUTCOMES, "max_length": None},
        {"schema_name": "mx_Custom_5", "display_name": "Campus", "data_type": "String",
         "mandatory": False, "options": [], "max_length": 50},
    ]}
    (HERE / "counselling-call.json").write_text(
        json.dumps(counselling_call, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
