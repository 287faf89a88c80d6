#!/usr/bin/env bash
# Ensures the services the hub and its tests need are installed and running on this
# machine: PostgreSQL (127.0.0.1:5432, trust auth), RabbitMQ (127.0.0.1:5672,
# guest/guest) and a Kafka-compatible broker, Tansu (127.0.0.1:9092). Starts what is stopped, installs what is missing (Debian), and fails
# loudly when a service cannot be brought up: tests never skip a missing service. With
# --with-chromium (make test) it also installs Debian's chromium and chromium-driver; with
# --with-bench-tools (make bench), wrk and pgbench; both options may be given together.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
fail() { log "ERROR: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 name=$2 seconds=$3
  for _ in $(seq "$seconds"); do
    port_open "$port" && return 0
    sleep 1
  done
  fail "$name did not open port $port within ${seconds}s"
}

apt_install() {
  command -v apt-get >/dev/null || fail "cannot install $*: no apt-get on this machine"
  log "installing $*"
  if [ ! -f /tmp/.hub-apt-updated ]; then
    apt-get update -qq && touch /tmp/.hub-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! port_open 5432; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for_port 5432 PostgreSQL 60
  fi
  psql "postgres://postgres@127.0.0.1:5432/postgres" -Atqc 'SELECT 1' >/dev/null \
    || fail "PostgreSQL is up but refuses postgres@127.0.0.1 (trust auth expected)"
  log "PostgreSQL ready on 127.0.0.1:5432"
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for_port 5672 RabbitMQ 120
  fi
  log "RabbitMQ ready on 127.0.0.1:5672"
}

# Tansu, from crates.io: its memory storage needs the `dynostore` feature, its PostgreSQL
# storage the `postgres` feature. Installed once per machine (about 12 minutes on 2 cores).
TANSU_LOG=${TANSU_LOG:-/tmp/hub-tansu.log}

ensure_tansu() {
  if ! port_open 9092; then
    if ! command -v tansu >/dev/null; then
      command -v cargo >/dev/null || fail "cannot install Tansu: no cargo on this machine"
      log "installing Tansu: cargo install tansu --locked --features dynostore,postgres (about 12 minutes, once)"
      cargo install tansu --locked --features dynostore,postgres >&2 \
        || fail "cargo install tansu failed"
    fi
    log "starting Tansu (memory storage), log in $TANSU_LOG"
    nohup tansu broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
    wait_for_port 9092 Tansu 60
  fi
  log "Kafka (Tansu) ready on 127.0.0.1:9092"
}

# Headless Chromium and its driver (Debian's), for the test that drives GraphiQL.
ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
  command -v chromedriver >/dev/null || fail "chromium-driver did not install"
  log "Chromium ready ($(chromium --version 2>/dev/null | head -n 1))"
}

# The load generator and the database's own benchmark (make bench): wrk, pgbench.
ensure_bench_tools() {
  command -v wrk >/dev/null || apt_install wrk
  command -v pgbench >/dev/null || apt_install postgresql-contrib
  command -v wrk >/dev/null || fail "wrk did not install"
  command -v pgbench >/dev/null || fail "pgbench is missing (postgresql-contrib)"
  log "wrk and pgbench ready"
}

ensure_postgres
ensure_rabbitmq
ensure_tansu
for option in "$@"; do
  case "$option" in
    --with-chromium) ensure_chromium ;;
    --with-bench-tools) ensure_bench_tools ;;
    *) fail "unknown option $option (--with-chromium, --with-bench-tools)" ;;
  esac
done
