#!/usr/bin/env bash
# kill -9 during a drain, the long run: builds a backlog with the broker down (KILLS x 2000
# readings on 50 topics), then starts the gateway against mosquitto and kills it with SIGKILL
# at a random moment (0-400 ms after exec) KILLS times (default 200), checking
# `PRAGMA integrity_check` after every kill; then drains.
# Pass: integrity ok every time, every reading delivered, first arrivals in order per topic,
# duplicates <= KILLS x in-flight window (20).
# Replay a run with EDGEBUS_SEED=<printed seed>; EDGEBUS_KILL_BACKLOG sets the backlog.
# Usage: tools/kill9.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGEBUS_KILLS=${1:-200}
exec cargo test --test reliability kill_9_at_random_moments_during_a_drain -- --ignored --nocapture
