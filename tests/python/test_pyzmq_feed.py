"""Our CRM simulator's ZeroMQ feed, read by a foreign peer: pyzmq (libzmq).

Consumers in the wild do `topic, message = recv_multipart()`: exactly two frames.
"""
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import zmq

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKERS = ROOT / "target" / "debug" / "workers"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pyzmq_receives_and_parses_our_change_events():
    api, feed = free_port(), free_port()
    context = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.RCVTIMEO, 10_000)
    subscriber.setsockopt_string(zmq.SUBSCRIBE, "dataChanges")
    subscriber.connect(f"tcp://127.0.0.1:{feed}")
    simulator = subprocess.Popen(
        [str(WORKERS), "simulate", "--only", "crm", "--records", "500", "--latency-ms", "0",
         "--change-interval-ms", "2", "--max-changes", "400", "--crm-addr", f"127.0.0.1:{api}",
         "--zmq-addr", f"tcp://127.0.0.1:{feed}"],
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        events = []
        while len(events) < 200:
            topic, message = subscriber.recv_multipart()
            assert topic == b"dataChanges"
            events.append(json.loads(message))
        seqs = [event["seq"] for event in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap on a local feed"
        kinds = {event["eventType"] for event in events}
        assert kinds <= {"CREATE", "UPDATE", "DELETE"} and len(kinds) == 3
        for event in events:
            data = event["data"]
            if event["eventType"] == "DELETE":
                assert list(data) == ["id"]
            else:
                assert set(data) == {"id", "firstName", "lastName", "email"}
                assert isinstance(data["email"], list)
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/customers?page=1", timeout=5) as response:
            page = json.loads(response.read())
        ids = [record["id"] for record in page]
        assert ids == sorted(ids, reverse=True) and len(ids) >= 450
    finally:
        simulator.terminate()
        assert simulator.wait(timeout=10) == 0
        subscriber.close()
        context.term()
