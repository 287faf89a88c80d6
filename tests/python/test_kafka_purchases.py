"""The purchases pipeline against a foreign Kafka client (confluent-kafka, librdkafka 2.10+),
through our real binaries and the local Kafka-protocol broker (Tansu on 127.0.0.1:9092).

- A confluent-kafka producer sends messages as the original customer management server
  did (key `key1`, no headers); `workers consume purchases` stores each exactly once, also
  when a new consumer group reads the whole topic again.
- `workers relay` publishes a purchase made through `POST /buy`; a confluent-kafka consumer
  checks the value byte for byte, the key and the headers.
"""
import json
import os
import re
import signal
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hub import drop_database, free_port, http_ok, psql, start, stop_all, wait_for

BROKERS = "127.0.0.1:9092"
PARTITIONS = 3


@pytest.fixture
def names():
    suffix = f"{os.getpid()}_{time.time_ns()}"
    values = {"database": f"hub_kafka_{suffix}", "topic": f"test_purchases_{suffix}"}
    processes = []
    yield values, processes
    stop_all(processes)
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for future in admin.delete_topics([values["topic"], values["topic"] + ".dlq"],
                                      operation_timeout=10).values():
        future.exception()  # best effort: a topic the test never made is fine
    drop_database(values["database"])


def create_topic(topic):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)], operation_timeout=10)
    for future in futures.values():
        future.result()


def consumer_env(values, group):
    admin = free_port()
    return admin, {
        "KAFKA_BROKERS": BROKERS, "KAFKA_TOPIC": values["topic"], "KAFKA_GROUPID": group,
        "PURCHASES_CONSUMER_ADMIN_ADDR": f"127.0.0.1:{admin}",
    }


def test_our_consumer_stores_what_the_original_producer_sends_exactly_once(names):
    values, processes = names
    create_topic(values["topic"])
    producer = Producer({"bootstrap.servers": BROKERS})
    for n in range(3):
        purchase = {"username": "john", "userid": "005", "price": f"{n}.30",
                    "timestamp": "2024-05-31T15:54:32.204Z"}
        producer.produce(values["topic"], key="key1", value=json.dumps(purchase))
    assert producer.flush(10) == 0

    admin, env = consumer_env(values, f"group_a_{values['topic']}")
    consumer = start(processes, ["workers", "consume", "purchases"], values["database"], **env)
    wait_for("the consumer's admin server", lambda: http_ok(f"http://127.0.0.1:{admin}/healthz"))
    count = lambda: psql(values["database"], "SELECT count(*) FROM purchases WHERE username = 'john'")
    wait_for("three purchases", lambda: count() == "3", seconds=60)
    assert psql(values["database"], "SELECT string_agg(price::text, ',' ORDER BY price) FROM purchases") \
        == "0.30,1.30,2.30"
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=20) == 0

    # Another group reads the topic from the start: nothing is stored twice.
    admin, env = consumer_env(values, f"group_b_{values['topic']}")
    start(processes, ["workers", "consume", "purchases"], values["database"], **env)

    def duplicates():
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as response:
            text = response.read().decode()
        found = re.search(r"^consumer_duplicates_total (\d+)", text, re.M)
        return found is not None and int(found.group(1)) == 3

    wait_for("the replay to be recognised", duplicates, seconds=60)
    assert count() == "3"


def test_our_relay_publishes_what_a_confluent_consumer_expects(names):
    values, processes = names
    port = free_port()
    start(processes, ["gateway"], values["database"], GATEWAY_ADDR=f"127.0.0.1:{port}",
          KAFKA_TOPIC=values["topic"])
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
    body = {"username": "ada", "userid": 7, "price": 1195.3, "timestamp": "2024-05-31T15:54:32.204Z"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/buy", method="POST", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    start(processes, ["workers", "relay", "--admin-addr", f"127.0.0.1:{free_port()}"], values["database"],
          KAFKA_BROKERS=BROKERS, KAFKA_TOPIC=values["topic"])
    wait_for("the row marked processed", lambda: psql(
        values["database"], "SELECT status FROM outbox_events") == "processed", seconds=60)

    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"reader_{values['topic']}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(values["topic"], p, 0) for p in range(PARTITIONS)])
    message = None
    deadline = time.time() + 30
    while message is None and time.time() < deadline:
        polled = consumer.poll(0.5)
        if polled is not None and polled.error() is None:
            message = polled
    consumer.close()
    assert message is not None, "no message on the topic"
    assert message.value() == (b'{"username":"ada","userid":"7","price":"1195.30",'
                               b'"timestamp":"2024-05-31T15:54:32.204Z"}')
    assert message.key() == b"ada"
    headers = {key: value.decode() for key, value in message.headers()}
    assert uuid.UUID(headers["id"]).version == 7
    assert headers["id"] == psql(values["database"], "SELECT event_id FROM outbox_events")
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", headers["traceparent"])
