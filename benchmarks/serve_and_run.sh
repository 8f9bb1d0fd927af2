#!/usr/bin/env bash
# Serve VICTIM with normalised answers on 127.0.0.1:PORT (`stealkit serve --normalize`; a fresh thief account
# in RUN/ledger.sqlite, its key in STEALKIT_API_KEY), run the experiment CONFIG against it into RUN (its
# `target.url` names the port), list the ledger's accounts, stop the server. Used by the real-data benchmarks.
#   bash benchmarks/serve_and_run.sh VICTIM CONFIG RUN PORT [stealkit run options ...]
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE  # the server and the runner take turns on the 2 cores
VICTIM=$1 CONFIG=$2 RUN=$3 PORT=$4
shift 4
mkdir -p "$RUN"
LEDGER="$RUN/ledger.sqlite"
ACCOUNT="thief-$(date +%s)"
STEALKIT_API_KEY="$(stealkit keys create "$ACCOUNT" --ledger "$LEDGER")"  # assigned first: set -e sees a failure
export STEALKIT_API_KEY
stealkit serve --checkpoint "$VICTIM" --ledger "$LEDGER" --port "$PORT" --normalize --device cpu --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python "$(dirname "$0")/wait_ready.py" "http://127.0.0.1:$PORT"
stealkit run "$CONFIG" --run-dir "$RUN" "$@"
stealkit keys list --ledger "$LEDGER"
kill $SERVER 2>/dev/null || true
wait $SERVER 2>/dev/null || true
trap - EXIT
