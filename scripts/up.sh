#!/usr/bin/env bash
# `make up`: builds, ensures PostgreSQL and RabbitMQ run, starts the upstream simulator and
# the gateway (which creates the database and applies migrations), prints the GraphiQL URL,
# and stops everything cleanly on ctrl-c.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo build --release --bins
bin=target/release
export GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:4000}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..." >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/workers" simulate & pids+=($!)
"$bin/gateway" & pids+=($!)

for _ in $(seq 60); do
  if curl -fsS "http://$GATEWAY_ADDR/readyz" >/dev/null 2>&1; then
    echo
    echo "  GraphiQL:  http://$GATEWAY_ADDR/graphql"
    echo "  Ingest:    curl -X POST http://$GATEWAY_ADDR/api/ingest"
    echo "  ctrl-c stops everything."
    echo
    break
  fi
  sleep 1
done

# Stop everything as soon as any process exits (or on ctrl-c).
wait -n "${pids[@]}" || true
