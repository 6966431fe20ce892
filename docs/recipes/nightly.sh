#!/usr/bin/env bash
# bulkpost nightly load, for cron: post tonight's export, skipping every key an earlier
# night posted (--history), and act on the exit code. Rows an earlier night left unfinished
# are finished too, even if tonight's export no longer has them. Recipe: docs/NIGHTLY.md.
#
#   15 2 * * *  EXPORT=/data/exports/orders-$(date -d yesterday +\%F).csv ON_CHANGED=update /opt/bulkpost/nightly.sh >>/var/log/bulkpost/nightly.log 2>&1
#
# Settings (environment): EXPORT and MAPPING are required; LSQ_HOST, LSQ_ACCESS_KEY and
# LSQ_SECRET_KEY as for any run. Optional: STATE_DIR (results, summaries, the history),
# ON_CHANGED (a row whose key an earlier night posted with other content: skip, the
# default, until you decide; update, for records that change, such as orders: their
# activity is updated in place; post, when each change is an activity of its own, such as a
# log of calls, or when "Activity Update" automations must not fire; fail), RETRIES and
# RETRY_DELAY (seconds) for runs that can finish later, NOTIFY (a command run with the
# subject as its argument and the details on stdin), BULKPOST (the CLI), BULKPOST_ARGS
# (more run options, e.g. "--rate 100/5s --mode both --share 09:00-19:00=40%,100%") and
# DAILY_CALLS (a budget of calls per account day, --daily-calls, shared with whatever else
# uses the account's quota).
#
# When the day's budget is spent (exit 4, nothing wrong), the export is noted in
# STATE_DIR/unfinished-exports, and the next night first resumes the exports noted there, in
# order, then loads its own.
#
# Exit codes, as bulkpost's (the highest of the exports loaded): 0 done; 1 rows need a
# person (rejected or invalid: see the report), or rows are still unfinished after RETRIES
# resumes; 2 refused before any request (configuration, or another run holds the files); 3
# stopped, and still stopped after RETRIES resumes; 4 the day's budget is spent: the next
# night resumes.
set -uo pipefail

: "${EXPORT:?EXPORT: the export to load tonight}"
: "${MAPPING:?MAPPING: the mapping file}"
STATE_DIR=${STATE_DIR:-/var/lib/bulkpost}
ON_CHANGED=${ON_CHANGED:-skip}
RETRIES=${RETRIES:-3}
RETRY_DELAY=${RETRY_DELAY:-900}
BULKPOST=${BULKPOST:-bulkpost}
DAILY_CALLS=${DAILY_CALLS:-}
budget=()
if [ -n "$DAILY_CALLS" ]; then
    budget=(--daily-calls "$DAILY_CALLS")
fi
unfinished="$STATE_DIR/unfinished-exports"
mkdir -p "$STATE_DIR"

alert() {  # alert SUBJECT; details on stdin
    if [ -n "${NOTIFY:-}" ]; then
        $NOTIFY "$1"
    else
        echo "bulkpost nightly: $1" >&2
        cat >&2
    fi
}

# counted IF_UNREADABLE FIELD...: the sum of the summary's FIELDs.
counted() {
    local fallback=$1
    shift
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sum(s.get(k,0) for k in sys.argv[2:]))' "$summary" "$@" 2>/dev/null || echo "$fallback"
}

details() {
    cat "$summary" 2>/dev/null || echo "(no summary: see the log)"
}

# The report, and the rows not posted with their columns, ready to fix and load again;
# rows carried over from earlier nights are not in this export: the log names them.
to_fix() {
    "$BULKPOST" report "$results" --input "$EXPORT" --failures "$STATE_DIR/to-fix-$name.csv" 2>&1
    local left
    left=$(counted 0 carried_left)
    if [ "$left" -gt 0 ]; then
        echo "$left rows carried over from earlier nights are still unfinished (the log's" \
             "row.carried_over lines name their input and row); the next run takes them again"
    fi
}

# load EXPORT: post one export, resuming it (one results file per export: running the same
# night again resumes it), and act on the exit code; returns it.
load() {
    EXPORT=$1
    name=$(basename "$EXPORT")
    name=${name%.*}
    results="$STATE_DIR/results-$name.csv"
    summary="$STATE_DIR/summary-$name.json"
    attempt=1
    while :; do
        rm -f "$summary"
        "$BULKPOST" run "$EXPORT" --mapping "$MAPPING" --results "$results" \
            --history "$STATE_DIR/history.db" --on-changed "$ON_CHANGED" \
            --summary-json "$summary" --log-format json --no-progress "${budget[@]}" \
            ${BULKPOST_ARGS:-}
        code=$?
        case $code in
            0)  changed=$(counted 0 changed)
                if [ "$changed" -gt 0 ] && [ "$ON_CHANGED" != post ]; then
                    # Posted before with other content, and not sent (skip; or update, where an
                    # update cannot change what changed): decide, then run with ON_CHANGED.
                    { details
                      echo "each row's reason: the error column of $results (error_type changed);"
                      echo "decide, then run this night again with ON_CHANGED=post, update or fail"
                    } | alert "$name: $changed rows skipped: their key was posted before with other content"
                fi
                return 0 ;;
            1)  # Rows a later run may still finish (failed: retries spent; unknown: to look up;
                # carried over from an earlier night and still unfinished)?
                if [ "$(counted 1 failed unknown carried_left)" -eq 0 ]; then
                    # Rejected or invalid rows: a rerun would not change them; a person must.
                    to_fix | alert "$name: rows not posted; fix them in $STATE_DIR/to-fix-$name.csv"
                    return 1
                fi ;;
            2)  details | alert "$name: refused before any request (exit 2)"
                return 2 ;;
            4)  # The day's budget of calls is spent: nothing is wrong; resumed after midnight.
                echo "bulkpost nightly: $name: the day's budget of calls is spent (exit 4);" \
                     "the next night resumes it" >&2
                return 4 ;;
            *)  ;;  # 3: stopped (quota, network, signal): a later run resumes
        esac
        if [ "$attempt" -gt "$RETRIES" ]; then
            if [ "$code" -eq 1 ]; then
                to_fix | alert "$name: not finished after $attempt runs (exit 1); rows not posted in $STATE_DIR/to-fix-$name.csv"
            else
                details | alert "$name: not finished after $attempt runs (exit $code)"
            fi
            return "$code"
        fi
        echo "bulkpost nightly: exit $code; resuming in ${RETRY_DELAY}s (retry $attempt of $RETRIES)" >&2
        attempt=$((attempt + 1))
        sleep "$RETRY_DELAY"
    done
}

# Exports an earlier night left when the day's budget was spent come first, then tonight's.
queue=()
if [ -f "$unfinished" ]; then
    while IFS= read -r earlier; do
        if [ -n "$earlier" ] && [ "$earlier" != "$EXPORT" ]; then
            queue+=("$earlier")
        fi
    done < "$unfinished"
fi
queue+=("$EXPORT")
worst=0
for index in "${!queue[@]}"; do
    load "${queue[$index]}"
    code=$?
    if [ "$code" -eq 4 ]; then
        printf '%s\n' "${queue[@]:$index}" > "$unfinished"
        exit 4
    fi
    if [ "$code" -gt "$worst" ]; then
        worst=$code
    fi
done
rm -f "$unfinished"
exit "$worst"
