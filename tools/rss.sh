#!/usr/bin/env bash
# Memory figures of `edgebus run` (release build), measured in one run:
#   1. RSS on the demo map (host readings every 2 s, no broker): the baseline;
#   2. RSS with 1 000 000 messages buffered on disk (synthetic source, no broker):
#      the backlog must live on disk, not in memory (target: within 2 MB of the baseline):
#      filled at 100 000 msg/s (the filling run's RSS is printed too), then the demo map is
#      run again on top of that backlog and compared with 1.
# Usage: tools/rss.sh [MESSAGES]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/edgebus
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# The demo map, pointed at a port where no broker listens and at data dir $1 (config file
# $2); runs it 10 s and prints its RSS in kB.
demo_rss() {
  sed -e "s#url: mqtt://localhost:1883#url: mqtt://127.0.0.1:$PORT#" \
      -e "s#data_dir: ../target/demo-data#data_dir: $1#" config/demo.yaml > "$2"
  RUST_LOG=warn $BIN run -c "$2" >&2 & local pid=$!
  sleep 10
  rss_kb $pid
  kill -TERM $pid; wait $pid || true
}

# 1. Demo map with its own data dir.
BASE=$(demo_rss "$WORK/demo" "$WORK/demo.yaml")
echo "demo map, 10 s, no broker: RSS ${BASE} kB"

# 2. One million buffered messages.
TICKS=$(( N / 100 ))
cat > "$WORK/load.yaml" <<YAML
gateway: { id: rss, data_dir: $WORK/load, clock_check: off }
upstream: { url: 'mqtt://127.0.0.1:$PORT', topic_prefix: bench }
devices:
  - { name: pi, type: host, poll: 2s }
  - { name: gen, type: synthetic, poll: 1ms, fanout: 100, count: $TICKS }
YAML
RUST_LOG=warn $BIN run -c "$WORK/load.yaml" & PID=$!
T0=$(date +%s)
while :; do
  D=$( ($BIN buffer stats -c "$WORK/load.yaml" 2>/dev/null || true) | awk -F': *' '/^depth/ {print $2}')
  [ "${D:-0}" -ge "$N" ] && break
  [ $(( $(date +%s) - T0 )) -gt 900 ] && { echo "timeout with depth $D"; break; }
  sleep 2
done
sleep 5
LOADED=$(rss_kb $PID); PEAK=$(hwm_kb $PID)
kill -TERM $PID; wait $PID || true
echo "filling at 100 000 msg/s, $D messages buffered: RSS ${LOADED} kB (peak ${PEAK} kB) after $(( $(date +%s) - T0 )) s"
echo "database: $(du -h "$WORK/load/outbox.db" | cut -f1)"

# 3. The demo map again, now on top of that backlog: the same work as in 1, plus the
#    buffered messages. This is the figure the target is about.
BACKLOG=$(demo_rss "$WORK/load" "$WORK/demo-backlog.yaml")
D=$( ($BIN buffer stats -c "$WORK/demo-backlog.yaml" 2>/dev/null || true) | awk -F': *' '/^depth/ {print $2}')
echo "demo map with $D messages buffered, 10 s: RSS ${BACKLOG} kB"
echo "difference to the demo baseline: $(( BACKLOG - BASE )) kB (target: within 2048 kB)"
