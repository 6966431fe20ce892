#!/usr/bin/env bash
# `make demo`: start the sandbox on loopback, as an account whose plan allows 10 calls per
# 5 s; walk a newcomer's first load (the account's activity types, one type's fields, a
# mapping drafted by `bulkpost init`, its dry run and the real run, whose rate limit is
# learnt from the answers and kept in the history); then load the samples at the limit the
# history kept, print the report, show that a rerun sends nothing and that the next night's
# overlapping export is skipped through the history, load the Parquet sample in --mode both
# (single and bulk calls at once), stop the sandbox.
# Output lands in build/demo/ (recreated: `bulkpost init` never overwrites a mapping).
set -euo pipefail
cd "$(dirname "$0")/.."
bulkpost=.venv/bin/bulkpost
out=build/demo
rm -rf "$out" && mkdir -p "$out"

"$bulkpost" sandbox --port 0 --rate 10/5s --latency 0.05:0.3 --ledger "$out/ledger.jsonl" \
    >"$out/sandbox.json" &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    [ -s "$out/sandbox.json" ] && break
    sleep 0.1
done
url=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["sandbox"])' "$out/sandbox.json")
echo "sandbox listening on $url"

export LSQ_ACCESS_KEY=demo-access-key LSQ_SECRET_KEY=demo-secret-key LSQ_HOST="$url"
# A run without --history keeps the account's own history in the user's data directory;
# the demo's account lives only as long as its sandbox, so its history stays in $out.
export BULKPOST_DATA_DIR="$out/data"

echo "== a first load, step 1: the account's activity types"
"$bulkpost" types
echo "== step 2: the fields of type 310 (Purchase), the type the export's rows become"
"$bulkpost" types 310
echo "== step 3: a mapping drafted from samples/first-load/export.csv (its header and rows),"
echo "   its columns matched to the type's fields by display name; --timezone says the"
echo "   export's times are India's (without it, init asks to confirm the zone)"
"$bulkpost" init samples/first-load/export.csv --event 310 --output "$out/first-load.toml" \
    --timezone Asia/Kolkata
echo "== the mapping written ($out/first-load.toml): read the lines marked CONFIRM or !!!"
cat "$out/first-load.toml"
echo "== step 4: the dry run init printed, with its results file in $out/ (it sends nothing)"
"$bulkpost" run samples/first-load/export.csv --mapping "$out/first-load.toml" \
    --results "$out/first-load-results.csv" --dry-run --log-format console
echo "== step 5: the real run, the same command without --dry-run, keeping a history. No"
echo "   --rate: it starts at the documented maximum (25 calls per 5 s), and the first"
echo "   rate-limited answer teaches it this account's limit (rate= says which)"
"$bulkpost" run samples/first-load/export.csv --mapping "$out/first-load.toml" \
    --results "$out/first-load-results.csv" --history "$out/history.db" --log-format console
"$bulkpost" report "$out/first-load-results.csv"

echo "== loading samples/activities.csv (100 rows) with the same history: it starts at the"
echo "   limit the first load learnt (rate=... (remembered)), and meets no rate-limited answer"
"$bulkpost" run samples/activities.csv --mapping samples/mapping.toml \
    --results "$out/results.csv" --history "$out/history.db" --log-format console
echo "== report"
"$bulkpost" report "$out/results.csv"
echo "== the same command again: everything is already posted, nothing is sent"
"$bulkpost" run samples/activities.csv --mapping samples/mapping.toml \
    --results "$out/results.csv" --history "$out/history.db" --log-format console
echo "== the next night's export (rows 61-100 again, with a results file of its own):"
echo "   the history skips every key an earlier run posted"
.venv/bin/python -c 'import csv,sys; rows=list(csv.reader(open(sys.argv[1], newline="")))
csv.writer(open(sys.argv[2], "w", newline="")).writerows(rows[:1] + rows[61:])' \
    samples/activities.csv "$out/next-night.csv"
"$bulkpost" run "$out/next-night.csv" --mapping samples/mapping.toml \
    --results "$out/results-next-night.csv" --history "$out/history.db" --log-format console
"$bulkpost" history stats --history "$out/history.db"
echo "== loading samples/activities.parquet (30 rows, typed columns) with --mode both:"
echo "   single calls and bulk calls of up to 25 at once, each under its own limit. Without"
echo "   --history it keeps the account's own (bulkpost history where), new here, and has a"
echo "   results file of its own, so no limit learnt earlier reaches it: it starts at the"
echo "   documented maxima again, and slows down when the answers say so"
"$bulkpost" run samples/activities.parquet --mapping samples/mapping-parquet.toml \
    --results "$out/results-parquet.csv" --log-format console --mode both
echo "== the same Parquet rows under another results file: the account's history knows"
echo "   them, so nothing is created a second time (--create-again would, by name)"
"$bulkpost" run samples/activities.parquet --mapping samples/mapping-parquet.toml \
    --results "$out/results-parquet-again.csv" --log-format console --mode both
echo "== sandbox counters"
.venv/bin/python -c 'import json,sys,urllib.request; print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1] + "/_sandbox/stats"))))' "$url"
echo "results in $out/"
