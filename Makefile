# The two commands: `make up` (run the hub locally) and `make test` (everything CI checks).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Tests create one database per test from this server (sqlx::test).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: help services up test fmt lint schema bench check python-deps node-deps graphiql browser

help:
	@echo "make up      build, start PostgreSQL/RabbitMQ if needed, run simulator + gateway"
	@echo "make test    start services, fmt --check, clippy -D warnings, all tests"
	@echo "make bench   benchmarks (release build), printing each figure and its limit"
	@echo "make schema  rewrite schema.graphql from the code"
	@echo "make graphiql build GraphiQL's bundle (npm) into web/graphiql/dist"

services:
	@scripts/services.sh

# The services, and headless Chromium for the GraphiQL test.
browser:
	@scripts/services.sh --with-chromium

up:
	@scripts/up.sh

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

# The binaries first: tests spawn target/debug/gateway (testkit finds it next to them).
test: browser fmt lint python-deps node-deps graphiql
	cargo build --quiet --bins
	DATABASE_URL=$(TEST_DATABASE_URL) cargo test --workspace --no-fail-fast
	python3 tests/python/check_compose.py
	python3 -m pytest -q tests/python

python-deps:
	python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/python/requirements.txt

# Apollo's composition library for the federation check, from the lockfile.
node-deps:
	npm ci --prefix tests/federation --no-audit --no-fund --silent

# GraphiQL's bundle (graphiql, react, graphql-ws from the npm registry, by the lockfile)
# into web/graphiql/dist, which the gateway serves (GRAPHIQL_ASSETS_DIR).
graphiql:
	npm ci --prefix web/graphiql --no-audit --no-fund --silent
	npm run --prefix web/graphiql --silent build

check:
	cargo check --workspace --all-targets

schema:
	cargo run --quiet --bin gateway -- --print-schema > schema.graphql

# The peer benchmark (gateway/benches/peers.rs) installs PostGraphile from its lockfile
# (tests/postgraphile) itself, and says so when it cannot.
bench:
	@scripts/services.sh --with-bench-tools
	cargo build --quiet --release --bins
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p workers --bench accounts
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p workers --bench orders
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p workers --bench crm
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p workers --bench purchases
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p workers --bench profiles
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p gateway --bench limits
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p gateway --bench subscriptions
	DATABASE_URL=$(TEST_DATABASE_URL) cargo bench -p gateway --bench peers
