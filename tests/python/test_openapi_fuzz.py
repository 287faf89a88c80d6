"""schemathesis (from PyPI) against the gateway's own OpenAPI document, `/openapi.json`:
every REST route is called with generated requests, valid and invalid (headers, path and
query parameters, bodies), and no answer may be a 5xx or break the document: an
undocumented status, another content type, a body or a header its schema does not allow.

The accounts simulator runs as the gateway's upstream, so `POST /api/ingest` can succeed.
The compatibility routes accept what their originals accepted (numeric strings for
numbers, say), so schemathesis' `negative_data_rejection` check is not asked for.
`SCHEMATHESIS_SEED` picks another seed (the default one keeps CI repeatable);
`SCHEMATHESIS_MAX_EXAMPLES` sets the cases per operation.
"""
import os
import subprocess
import time

import pytest

from hub import drop_database, free_port, http_ok, start, stop_all, wait_for

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


@pytest.fixture
def gateway():
    database = f"hub_openapi_{os.getpid()}_{time.time_ns()}"
    processes = []
    upstream, port = free_port(), free_port()
    start(processes, ["workers", "simulate", "--only", "accounts",
                      "--accounts-addr", f"127.0.0.1:{upstream}"], database)
    wait_for("the accounts simulator", lambda: http_ok(f"http://127.0.0.1:{upstream}/api/health"))
    start(processes, ["gateway"], database, GATEWAY_ADDR=f"127.0.0.1:{port}",
          MOCK_SERVER_URL=f"http://127.0.0.1:{upstream}", INTERNAL_API_KEY="fuzz-internal-key")
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
    yield f"http://127.0.0.1:{port}"
    stop_all(processes)
    drop_database(database)


def test_no_rest_route_answers_5xx_or_breaks_its_own_document(gateway, tmp_path):
    command = [
        "schemathesis", "run", f"{gateway}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "60"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261204"),
        "--workers", "2",
        "--request-timeout", "10",
        "--suppress-health-check", "all",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # It really ran every operation (a document it could not read would test nothing).
    assert "16 selected" in output or "16 total" in output, output
