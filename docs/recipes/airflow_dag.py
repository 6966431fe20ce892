"""Airflow recipe: each night's export into LeadSquared, one task, through bulkpost's Python
API. Copy it into your DAGs folder and set the paths; recipe: docs/NIGHTLY.md.

The DAG loads an export of orders, whose status and amounts change from night to night:
``on_changed="update"`` updates the activity of an order that changed, in place. Use
``"post"`` instead when each change should be an activity of its own (a log of calls), or
when the account's "Activity Update" automations must not fire; ``"skip"`` (bulkpost's
default) sends no change until you decide.

The task's outcome follows what a person, or a retry, can do about it:

- every row posted or updated, or skipped because an earlier night posted its key: success;
  the run's summary is the task's return value (XCom);
- rows refused (rejected, invalid): ``AirflowFailException``, failed without retries, with
  the report; a rerun would not change them, a person must;
- bad configuration (mapping, keys' format, input): ``AirflowFailException`` too;
- stopped (quota spent, network, signal), rows that may still be posted (failed, unknown;
  or carried over from an earlier night and still unfinished), or another run holding the
  files: an ordinary exception, so Airflow retries the task, and the retry resumes the same
  results file;
- the day's budget of calls spent (``daily_calls=``, exit 4): nothing is wrong; success, with
  a warning, and the export is noted in ``unfinished-exports``: the next night's task first
  resumes the exports noted there, in order, then loads its own.

Keys come from the worker's environment (``LSQ_HOST``, ``LSQ_ACCESS_KEY``,
``LSQ_SECRET_KEY``), e.g. from an Airflow connection exported by your deployment.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bulkpost
from bulkpost.storage.report import build_report

try:
    from airflow import DAG
    from airflow.exceptions import AirflowFailException
    from airflow.operators.python import PythonOperator
except ImportError:  # outside Airflow (the recipe's tests): the task's function alone
    DAG = None

    class AirflowFailException(Exception):  # type: ignore[no-redef]
        """Airflow's "fail now, do not retry"."""


STATE_DIR = Path(os.environ.get("BULKPOST_STATE_DIR", "/var/lib/bulkpost"))


class RunAgain(RuntimeError):
    """A later attempt can finish the job: Airflow retries the task, which resumes."""


def load_export(export: str, mapping: str, state_dir: str | Path = STATE_DIR,
                **options: Any) -> dict[str, Any]:
    """Post the exports an earlier night left when the day's budget was spent, then this one;
    return this one's summary (or, when the budget is spent first, the last run's).
    ``options`` go to :func:`bulkpost.run` (``rate``, ``mode``, ``on_changed``, ``share``,
    ``daily_calls``, and ``host``/keys when not in the environment)."""
    # bulkpost's log lines as JSON on stderr, which Airflow keeps in the task's log.
    bulkpost.configure_logging("json", "info")
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    unfinished = state / "unfinished-exports"
    earlier = unfinished.read_text().splitlines() if unfinished.exists() else []
    queue = [each for each in earlier if each and each != export] + [export]
    for index, each in enumerate(queue):
        try:
            data = _load_one(each, mapping, state, **options)
        except AirflowFailException:
            # A person must see to it: a later night does not try it again.
            unfinished.write_text("".join(f"{e}\n" for e in queue[index + 1:]))
            raise
        if data.get("budget_spent"):
            unfinished.write_text("".join(f"{e}\n" for e in queue[index:]))
            logging.getLogger(__name__).warning(
                "the day's budget of calls is spent (renews %s): %s and the exports after it "
                "are resumed by the next night", data.get("renews"), each)
            return data
    unfinished.unlink(missing_ok=True)
    return data


def _load_one(export: str, mapping: str, state: Path, **options: Any) -> dict[str, Any]:
    """Post one export, resuming it; its summary, or the exception for Airflow."""
    results = state / f"results-{Path(export).stem}.csv"  # the same night resumes it
    try:
        summary = bulkpost.run(export, mapping, results, history=state / "history.db",
                               progress=False, **options)
    except bulkpost.Locked as exc:  # the previous attempt, or night, is still running
        raise RunAgain(str(exc)) from None
    except bulkpost.UsageError as exc:  # mapping, input or settings: a person must fix it
        raise AirflowFailException(str(exc)) from None
    data = summary.as_dict()
    if summary.budget_spent:  # nothing wrong: the next night resumes it
        return data
    # Rows carried over from an earlier night (no longer in any export) that are still
    # unfinished are taken again by the next run: retry, as for failed and unknown rows.
    if summary.aborted or summary.failed or summary.unknown or summary.carried_left:
        raise RunAgain(f"not finished ({summary.aborted or 'rows left to retry'}): {data}")
    if summary.exit_code != 0:
        raise AirflowFailException(f"rows not posted: {data}\n{build_report(results).render()}")
    if summary.changed and options.get("on_changed", "skip") != "post":
        # Not sent: with "skip", every changed row; with "update", those whose lead,
        # date-time or event code changed (each row's reason is in the results file).
        logging.getLogger(__name__).warning(
            "%d rows skipped: their key was posted before with other content; reasons in "
            "%s (error_type changed). Decide, then run again with on_changed='post', "
            "'update' or 'fail'", summary.changed, results)
    return data


if DAG is not None:
    with DAG(
        dag_id="bulkpost_nightly",
        schedule="15 2 * * *",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,  # one night at a time: they share the history
        default_args={"retries": 4, "retry_delay": timedelta(minutes=15),
                      "retry_exponential_backoff": True},
    ):
        PythonOperator(
            task_id="load_activities",
            python_callable=load_export,
            # ds: the day whose data the export holds (the run starts the day after)
            op_kwargs={"export": "/data/exports/orders-{{ ds }}.csv",
                       "mapping": "/etc/bulkpost/mapping.toml",
                       # Orders change: update their activity in place (see the top).
                       "on_changed": "update"},
            execution_timeout=timedelta(hours=20),
        )
