#!/bin/sh
# The image's entrypoint. The Helm chart starts the code location as
# `dagster code-server start ...`; before it serves, every rollout brings the databases to the
# code's schema (`sync-pipelines migrate`) and writes the pool limits of sync_pipelines/pools.py
# into the Dagster instance (`sync-pipelines pools`). Until the code server serves, no schedule,
# sensor or UI launch can reach this code, so no run starts on an old schema; if a migration
# fails the container exits and Kubernetes keeps the previous code server serving.
# Re-running is harmless: applied migrations are skipped (under PostgreSQL's advisory lock, so
# two replicas starting at once apply each file once) and pool limits are set, not added.
# Every other command (the run pods' `dagster api execute_run`, a shell) runs unchanged.
set -eu
if [ "$#" -ge 3 ] && [ "$(basename "$1")" = dagster ] && [ "$2" = code-server ] && [ "$3" = start ]; then
  sync-pipelines migrate
  sync-pipelines pools
fi
exec "$@"
