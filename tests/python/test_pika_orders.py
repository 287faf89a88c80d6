"""The orders pipeline against a foreign AMQP client (pika), through our real binaries.

- A pika producer publishes seed-format `order.created` messages (one of them twice);
  `workers consume orders` applies each event once.
- `workers relay` publishes an order placed through the gateway; a pika consumer checks the
  message's exact shape and properties.
"""
import json
import os
import re
import signal
import time
import urllib.request
import uuid

import pika
import pytest

from hub import drop_database, free_port, http_ok, psql, start, stop_all, wait_for

CONTRACT_FIELDS = [
    "order_id", "customer_id", "product_name", "quantity", "price", "status", "event_id", "occurred_at",
]


@pytest.fixture
def names():
    suffix = f"{os.getpid()}_{time.time_ns()}"
    database = f"hub_pika_{suffix}"
    values = {
        "database": database,
        "exchange": f"test.pika.orders.{suffix}",
        "queue": f"test.pika.queue.{suffix}",
    }
    processes = []
    yield values, processes
    stop_all(processes)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = connection.channel()
    for queue in (values["queue"], values["queue"] + ".dlq"):
        channel.queue_delete(queue)
    for exchange in (values["exchange"], values["exchange"] + ".dlx"):
        channel.exchange_delete(exchange)
    connection.close()
    drop_database(database)


def test_our_consumer_applies_pika_published_seed_messages_once(names):
    values, processes = names
    admin = free_port()
    consumer = start(
        processes,
        ["workers", "consume", "orders", "--exchange", values["exchange"], "--queue", values["queue"],
         "--admin-addr", f"127.0.0.1:{admin}"],
        values["database"],
    )
    wait_for("the consumer's admin server", lambda: http_ok(f"http://127.0.0.1:{admin}/healthz"))
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))

    def consuming():
        # A fresh channel each time: a passive declare of a missing queue closes the channel.
        probe = connection.channel()
        try:
            return probe.queue_declare(values["queue"], passive=True).method.consumer_count >= 1
        finally:
            if probe.is_open:
                probe.close()

    # Consuming means declared and bound: publishing earlier could go unrouted.
    wait_for("the consumer to consume", consuming)
    channel = connection.channel()
    channel.confirm_delivery()

    def publish(event_id):
        message = {
            "order_id": 1, "customer_id": 3, "product_name": "Widget", "quantity": 1, "price": 19.99,
            "status": "pending", "event_id": event_id, "occurred_at": "2024-05-31T15:54:32.204Z",
        }
        channel.basic_publish(
            exchange=values["exchange"], routing_key="order.created", body=json.dumps(message),
            properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )

    publish("1001")
    publish("1001")
    publish("1002")
    connection.close()
    count = lambda: psql(values["database"], "SELECT orders_count FROM customers WHERE source='SHOP' AND external_id='3'")
    wait_for("both events applied", lambda: count() == "2")
    time.sleep(0.5)
    assert count() == "2", "the duplicate was applied twice"
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=15) == 0


def test_our_relay_publishes_what_a_pika_consumer_expects(names):
    values, processes = names
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = connection.channel()
    channel.exchange_declare(values["exchange"], exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, values["exchange"], routing_key="order.created")

    port = free_port()
    start(processes, ["gateway"], values["database"], GATEWAY_ADDR=f"127.0.0.1:{port}",
          ORDERS_EXCHANGE=values["exchange"])
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/orders", method="POST",
        data=json.dumps({"customer_id": 7, "product_name": "Kettle", "quantity": 3, "price": 42.5}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        order = json.loads(response.read())
    start(processes, ["workers", "relay", "--exchange", values["exchange"], "--queue", values["queue"],
                      "--admin-addr", f"127.0.0.1:{free_port()}"],
          values["database"])

    received = []

    def got_message():
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            received.append((properties, body))
        return bool(received)

    wait_for("the relayed message", got_message)
    properties, body = received[0]
    message = json.loads(body, object_pairs_hook=lambda pairs: pairs)
    assert [key for key, _ in message] == CONTRACT_FIELDS
    message = dict(message)
    assert message["order_id"] == order["id"]
    assert message["customer_id"] == 7
    assert message["product_name"] == "Kettle"
    assert message["quantity"] == 3
    assert message["price"] == 42.5
    assert message["status"] == "pending"
    event_id = message["event_id"]
    assert isinstance(event_id, str) and uuid.UUID(event_id).version == 7, event_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["occurred_at"])
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.message_id == event_id
    assert properties.headers["id"] == event_id
    assert properties.type == "order.created"
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", properties.headers["traceparent"])
    wait_for("the row marked processed", lambda: psql(
        values["database"], f"SELECT status FROM outbox_events WHERE event_id = '{uuid.UUID(event_id)}'") == "processed")
    connection.close()
