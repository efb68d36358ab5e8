#!/usr/bin/env bash
# Soak: the release binary at RATE readings/s (synthetic source, 10 topics) against a local
# mosquitto for DURATION seconds, with a subscriber checking every reading. RSS is sampled
# every INTERVAL seconds and printed as a curve. Pass criteria:
#   1. RSS flat: max - min of the samples after WARMUP seconds <= RSS_SLACK_KB (2048 kB);
#   2. every reading delivered once, in order per topic (counted by mosquitto_sub + awk);
#   3. the outbox drains to depth 0, and the database file is then no bigger than at the end
#      of the warm-up (+ DB_SLACK_KB): no growth once drained.
# Usage: tools/soak.sh [DURATION]          (default 3600)
#   env: RATE=1000 INTERVAL=10 WARMUP=120 RSS_SLACK_KB=2048 DB_SLACK_KB=64
#        DURABILITY=always (every reading goes through SQLite; `offline`, the default of the
#        map, keeps them in memory while the broker is reachable)
#        BIN=path/to/edgebus (default: cargo build --release, then the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3600}
RATE=${RATE:-1000}
INTERVAL=${INTERVAL:-10}
WARMUP=${WARMUP:-120}
RSS_SLACK_KB=${RSS_SLACK_KB:-2048}
DB_SLACK_KB=${DB_SLACK_KB:-64}
DURABILITY=${DURABILITY:-always}
FANOUT=10
POLL_MS=$(( 1000 * FANOUT / RATE ))
[ "$POLL_MS" -ge 1 ] || { echo "RATE too high for a 1 ms tick with fanout $FANOUT" >&2; exit 2; }
TICKS=$(( DURATION * 1000 / POLL_MS ))
EXPECTED=$(( TICKS * FANOUT ))
for p in mosquitto mosquitto_sub; do
  command -v $p >/dev/null || [ -x /usr/sbin/$p ] || { echo "$p missing (apt-get install mosquitto mosquitto-clients)" >&2; exit 2; }
done
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET/release/edgebus
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root"
cat > "$WORK/mosquitto.conf" <<CONF
$USER_LINE
listener $PORT 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
max_queued_messages 0
log_dest none
CONF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>/dev/null & PIDS+=($!)
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# The subscriber: counts readings per topic and how many broke the sequence 0,1,2,...
mkfifo "$WORK/sub.fifo"
awk '{ if (match($0, /"value":[0-9]+/)) { v = substr($0, RSTART + 8, RLENGTH - 8) + 0;
       t = $1; if (v != next_v[t] + 0) bad++; next_v[t] = v + 1; n++ } }
     END { printf "%d %d\n", n, bad + 0 }' < "$WORK/sub.fifo" > "$WORK/received" & AWK=$!
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -i soak-check -c -t 'soak/gw/gen/#' -F '%t %p' \
  > "$WORK/sub.fifo" & SUB=$!; PIDS+=($SUB)
sleep 1

cat > "$WORK/soak.yaml" <<YAML
gateway: { id: gw, data_dir: $WORK/data, clock_check: off }
upstream: { url: 'mqtt://127.0.0.1:$PORT', topic_prefix: soak }
buffer: { durability: $DURABILITY }
devices:
  - { name: gen, type: synthetic, poll: ${POLL_MS}ms, fanout: $FANOUT, count: $TICKS }
YAML
RUST_LOG=warn "$BIN" run -c "$WORK/soak.yaml" & GW=$!; PIDS+=($GW)

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
size_kb() { [ -f "$1" ] && echo $(( $(stat -c %s "$1") / 1024 )) || echo 0; }
depth() { "$BIN" buffer stats -c "$WORK/soak.yaml" 2>/dev/null | awk -F': *' '/^depth/ {print $2}'; }

echo "soak: $RATE readings/s for $DURATION s ($EXPECTED readings, durability $DURABILITY), RSS every $INTERVAL s, warm-up $WARMUP s"
echo "    t_s   rss_kB  depth   db_kB  wal_kB"
T0=$(date +%s)
MIN=""; MAX=""; WARM_DB=""
while :; do
  sleep "$INTERVAL"
  kill -0 $GW 2>/dev/null || { echo "FAIL: the gateway exited"; exit 1; }
  T=$(( $(date +%s) - T0 ))
  R=$(rss_kb $GW); D=$(depth); DB=$(size_kb "$WORK/data/outbox.db"); WAL=$(size_kb "$WORK/data/outbox.db-wal")
  printf '%7d %8d %6s %7d %7d\n' "$T" "$R" "${D:-?}" "$DB" "$WAL"
  if [ "$T" -ge "$WARMUP" ]; then
    [ -z "$WARM_DB" ] && WARM_DB=$DB
    [ -z "$MIN" ] || [ "$R" -lt "$MIN" ] && MIN=$R
    [ -z "$MAX" ] || [ "$R" -gt "$MAX" ] && MAX=$R
  fi
  [ "$T" -ge "$DURATION" ] && break
done

# The generator has finished (or is about to): wait for the drain.
for _ in $(seq 120); do [ "$(depth)" = 0 ] && break; sleep 1; done
D=$(depth)
sleep 3
END_DB=$(size_kb "$WORK/data/outbox.db"); END_WAL=$(size_kb "$WORK/data/outbox.db-wal")
kill -TERM $GW; wait $GW || true
sleep 2; kill $SUB 2>/dev/null || true; wait $AWK || true
read -r GOT BAD < "$WORK/received" || { GOT=0; BAD=0; }

FAIL=0
echo "RSS after warm-up: min $MIN kB, max $MAX kB, spread $(( MAX - MIN )) kB (limit $RSS_SLACK_KB kB)"
[ $(( MAX - MIN )) -le "$RSS_SLACK_KB" ] || { echo "FAIL: RSS not flat"; FAIL=1; }
echo "delivered: $GOT of $EXPECTED, out of sequence: $BAD"
[ "$GOT" -eq "$EXPECTED" ] && [ "$BAD" -eq 0 ] || { echo "FAIL: delivery"; FAIL=1; }
echo "outbox depth at the end: $D; database $END_DB kB (+ WAL $END_WAL kB), $WARM_DB kB after warm-up (limit +$DB_SLACK_KB kB)"
[ "$D" = 0 ] || { echo "FAIL: the outbox did not drain"; FAIL=1; }
[ "$END_DB" -le $(( WARM_DB + DB_SLACK_KB )) ] || { echo "FAIL: the database grew"; FAIL=1; }
[ "$FAIL" = 0 ] && echo "soak: PASS" || { echo "soak: FAIL"; exit 1; }
