"""The gateway as an Apollo Federation v2 subgraph: a router's two calls against the real
binary (`_service { sdl }`, then `_entities` for Customer, Order and Purchase
representations), and Apollo's own composition library (`@apollo/composition`, from npm,
tests/federation) composing that SDL with a second subgraph that extends all three."""
import json
import os
import pathlib
import subprocess
import time
import urllib.request

import pytest

from hub import ROOT, drop_database, free_port, http_ok, psql, start, stop_all, wait_for

FEDERATION = ROOT / "tests" / "federation"


def graphql(port, query, variables=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def gateway():
    database = f"hub_federation_{os.getpid()}_{time.time_ns()}"
    processes = []
    port = free_port()
    start(processes, ["gateway"], database, GATEWAY_ADDR=f"127.0.0.1:{port}")
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    yield port, database
    stop_all(processes)
    drop_database(database)


def test_the_subgraph_sdl_composes_with_another_subgraph(gateway, tmp_path):
    port, _ = gateway
    sdl = graphql(port, "{ _service { sdl } }")["data"]["_service"]["sdl"]
    assert "@link" in sdl and "federation/v2" in sdl, sdl[:300]
    for entity in ("Customer", "Order", "Purchase"):
        declared = [line for line in sdl.splitlines() if line.startswith(f"type {entity} ")]
        assert declared and '@key(fields: "id")' in declared[0], (entity, declared)
    path = tmp_path / "hub.graphql"
    path.write_text(sdl)
    composed = subprocess.run(["node", str(FEDERATION / "compose.mjs"), str(path)],
                              capture_output=True, text=True, timeout=120)
    assert composed.returncode == 0, composed.stderr
    assert "reviews" in composed.stdout and "emails" in composed.stdout, composed.stdout


def test_entities_resolve_representations_by_id_in_their_order(gateway):
    port, database = gateway
    psql(database, "INSERT INTO purchases (username, userid, price, purchased_at, source_key) "
                   "VALUES ('ann', 'u1', 9.5, now(), 'test:federation:1')")
    order = graphql(port, 'mutation { createOrder(input: {customerId: "'
                    + customer_id(port) + '", productName: "Widget", quantity: 1, price: "2.50"}) { id } }')
    assert "errors" not in order, order
    order_id = order["data"]["createOrder"]["id"]
    purchase_id = graphql(port, '{ purchases(username: "ann") { edges { node { id } } } }')[
        "data"]["purchases"]["edges"][0]["node"]["id"]
    customer = customer_id(port)
    representations = [
        {"__typename": "Purchase", "id": purchase_id},
        {"__typename": "Customer", "id": customer},
        {"__typename": "Order", "id": order_id},
        {"__typename": "Order", "id": customer},
    ]
    answer = graphql(port, """query($r: [_Any!]!) { _entities(representations: $r) {
        __typename ... on Customer { id } ... on Order { id productName } ... on Purchase { id username } } }""",
                     {"r": representations})
    assert answer.get("data"), answer
    entities = answer["data"]["_entities"]
    assert entities[0] == {"__typename": "Purchase", "id": purchase_id, "username": "ann"}, answer
    assert entities[1] == {"__typename": "Customer", "id": customer}, answer
    assert entities[2] == {"__typename": "Order", "id": order_id, "productName": "Widget"}, answer
    # A customer's id given as an Order is no Order: null for that entry only.
    assert entities[3] is None and "errors" not in answer, answer


def customer_id(port):
    return graphql(port, "{ customers(first: 1) { edges { node { id } } } }")[
        "data"]["customers"]["edges"][0]["node"]["id"]
