"""What the foreign-peer tests share: our binaries started as child processes over a
database of their own, free ports, psql, polling and HTTP checks."""
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "debug"
SERVER = "postgres://postgres@127.0.0.1:5432"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def psql(database, sql):
    out = subprocess.run(
        ["psql", f"{SERVER}/{database}", "-Atqc", sql], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def drop_database(database):
    subprocess.run(["psql", f"{SERVER}/postgres", "-qc", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
                   check=True)


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # the thing is not up yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def start(processes, args, database, **env):
    """Starts one of our binaries (`args[0]` is `gateway` or `workers`) over `database`,
    which it creates and migrates; `processes` collects it for the fixture to kill."""
    process = subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        env={**os.environ, "DATABASE_URL": f"{SERVER}/{database}", "RUST_LOG": "warn", **env},
    )
    processes.append(process)
    return process


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
