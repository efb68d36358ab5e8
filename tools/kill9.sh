#!/usr/bin/env bash
# kill -9 during a drain, the long run: builds a backlog with the broker down (KILLS x 1500
# readings on 50 topics), then starts the gateway against mosquitto and kills it with SIGKILL
# KILLS times (default 200) at a random moment: three kills in four within 300 ms after that
# run's first delivery (mid-drain), one in four within 300 ms of exec (opening the file,
# connecting). `PRAGMA integrity_check` after every kill; then a last run drains everything.
# Pass: integrity ok every time, every reading delivered, first arrivals in order per topic,
# duplicates <= KILLS x in-flight window (20).
# Replay a run with EDGEBUS_SEED=<printed seed>; EDGEBUS_KILL_BACKLOG sets the backlog.
# Usage: tools/kill9.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGEBUS_KILLS=${1:-200}
exec cargo test --test reliability kill_9_at_random_moments_during_a_drain -- --ignored --nocapture
