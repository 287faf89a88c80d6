"""Byte-for-byte parity of our accounts simulator with a Flask server.

The original accounts mock server was a Flask app. Here a Flask app written to behave as
the original did (see README, Compatibility notes: accounts) serves the same data file,
and every response of `workers simulate --only accounts` must equal Flask's: status,
content type, body bytes (key order, separators, float formatting, non-ASCII escaping,
trailing newline).
"""
import json
import math
import os
import pathlib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKERS = ROOT / "target" / "debug" / "workers"

PATHS = [
    "/api/health",
    "/api/customers",
    "/api/customers?page=1&limit=1",
    "/api/customers?page=2&limit=10",
    "/api/customers?page=3&limit=10",
    "/api/customers?page=4&limit=10",
    "/api/customers?page=0&limit=0",
    "/api/customers?page=-3&limit=-3",
    "/api/customers?page=abc&limit=xyz",
    "/api/customers?page=1&limit=1000",
    "/api/customers?page=+2&limit=%205%20",
    "/api/customers?page=2.5&limit=7",
    "/api/customers?page=&limit=",
    "/api/customers?page=1&page=2&limit=3",
    "/api/customers/CUST001",
    "/api/customers/CUST025",
    "/api/customers/NOPE",
    "/api/customers/J%C3%B6rg",
]


def flask_app(customers):
    app = Flask("mock-server")

    @app.route("/api/health")
    def health():
        return jsonify({"status": "healthy", "service": "mock-server", "total_customers": len(customers)})

    @app.route("/api/customers")
    def list_customers():
        page = max(request.args.get("page", 1, type=int), 1)
        limit = min(max(request.args.get("limit", 10, type=int), 1), 100)
        start = (page - 1) * limit
        total = len(customers)
        return jsonify(
            {
                "data": customers[start : start + limit],
                "total": total,
                "page": page,
                "limit": limit,
                "total_pages": math.ceil(total / limit),
            }
        )

    @app.route("/api/customers/<customer_id>")
    def get_customer(customer_id):
        found = next((c for c in customers if c["customer_id"] == customer_id), None)
        if found is None:
            return jsonify({"error": "Customer not found", "customer_id": customer_id}), 404
        return jsonify({"data": found})

    return app


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def wait_until_up(base):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            fetch(base, "/api/health")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{base} did not come up")


@pytest.fixture(params=["shipped", "unicode"])
def servers(request, tmp_path):
    data_file = ROOT / "workers" / "data" / "accounts_customers.json"
    if request.param == "unicode":
        records = json.loads(data_file.read_text())[:5]
        records[0]["first_name"] = "Jörg"
        records[0]["customer_id"] = "Jörg"
        records[1]["last_name"] = "Núñez 😀"
        records[2]["account_balance"] = 0.1
        records[3]["account_balance"] = 100
        data_file = tmp_path / "unicode.json"
        data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    customers = json.loads(data_file.read_text(encoding="utf-8"))

    flask_server = make_server("127.0.0.1", free_port(), flask_app(customers), threaded=True)
    threading.Thread(target=flask_server.serve_forever, daemon=True).start()
    port = free_port()
    ours = subprocess.Popen(
        [str(WORKERS), "simulate", "--only", "accounts", "--accounts-addr", f"127.0.0.1:{port}",
         "--accounts-file", str(data_file)],
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        yield f"http://127.0.0.1:{flask_server.server_port}", base
    finally:
        ours.terminate()
        ours.wait(timeout=10)
        flask_server.shutdown()


def test_every_response_matches_flask_byte_for_byte(servers):
    flask_base, our_base = servers
    for path in PATHS:
        assert fetch(our_base, path) == fetch(flask_base, path), path
