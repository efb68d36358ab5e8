#!/usr/bin/env bash
# Broker flapping, the long run: mosquitto stopped and started FLAPS times (default 1000) at
# random intervals while the gateway (debug build, as a process) streams numbered readings.
# Pass: every reading delivered, order kept per topic, duplicates within the in-flight window
# per reconnect, open file descriptors and threads back to the baseline (+2); RSS is printed.
# CI runs the same test with 30 restarts. Replay a run with EDGEBUS_SEED=<printed seed>.
# Usage: tools/flap.sh [FLAPS]
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGEBUS_FLAPS=${1:-1000}
exec cargo test --test reliability broker_flapping_loses_nothing_and_leaks_nothing -- --nocapture
