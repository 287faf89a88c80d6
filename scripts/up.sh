#!/usr/bin/env bash
# `make up`: builds, ensures PostgreSQL, RabbitMQ and Kafka (Tansu) run, starts the upstream
# simulator, the gateway (which creates the database and applies migrations), the outbox
# relay, the order and purchase consumers, the CRM indexer and the profile sync, prints the
# GraphiQL URL, and stops everything cleanly on ctrl-c.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
# GraphiQL's bundle, from the npm registry (the gateway runs without it, and says so).
make --no-print-directory graphiql || echo "GraphiQL not built (needs npm); the API works without it" >&2
cargo build --release --bins
bin=target/release
export GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:4000}
# A local key so the customer service route can be tried; set your own in production.
export INTERNAL_API_KEY=${INTERNAL_API_KEY:-local-dev-key}

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

# The relay and the consumer start once the gateway has created and migrated the database.
ready=false
for _ in $(seq 120); do
  if curl -fsS "http://$GATEWAY_ADDR/readyz" >/dev/null 2>&1; then ready=true; break; fi
  sleep 0.5
done
if [ "$ready" != true ]; then
  echo "the gateway did not become ready on $GATEWAY_ADDR within 60 s" >&2
  exit 1
fi
"$bin/workers" relay & pids+=($!)
"$bin/workers" consume orders & pids+=($!)
"$bin/workers" consume purchases & pids+=($!)
"$bin/workers" index & pids+=($!)
"$bin/workers" sync & pids+=($!)

echo
echo "  GraphiQL:  http://$GATEWAY_ADDR/graphql"
echo "  Ingest:    curl -X POST http://$GATEWAY_ADDR/api/ingest"
echo "  Order:     curl -X POST http://$GATEWAY_ADDR/api/v1/orders -H 'Content-Type: application/json' \\"
echo "               -d '{\"customer_id\": 1, \"product_name\": \"Lamp\", \"quantity\": 1, \"price\": 25.5}'"
echo "  Purchase:  curl -X POST http://$GATEWAY_ADDR/buy -H 'Content-Type: application/json' \\"
echo "               -d '{\"username\": \"john\", \"userid\": \"005\", \"price\": \"1195.30\", \"timestamp\": \"2024-05-31T15:54:32.204Z\"}'"
echo "  Metrics:   http://$GATEWAY_ADDR/metrics, relay :9101, order consumer :9102, indexer :9103,"
echo "             purchase consumer :9104, profile sync :2112 (/metrics)"
echo "  Health:    curl http://$GATEWAY_ADDR/graphql -H 'Content-Type: application/json' \\"
echo "               -d '{\"query\": \"{ syncStatus { pipeline state lastError } }\"}'"
echo "  The CRM indexer backfills 100,000 records at 1 s per page (about 10 s), then follows the feed."
echo "  ctrl-c stops everything."
echo

# Stop everything as soon as any process exits (or on ctrl-c).
wait -n "${pids[@]}" || true
