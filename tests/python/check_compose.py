"""Static checks of compose.yaml and the Dockerfile (no Docker engine runs here).

Fails with a list of problems: unknown dependencies, services without health checks,
hub services running commands the binaries do not have, environment variables the
binaries do not read, and a build stage older than the workspace's rust-version.
"""
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary_help(binary, *args):
    path = ROOT / "target" / "debug" / binary
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", binary], cwd=ROOT, check=True)
    return subprocess.run([str(path), *args, "--help"], capture_output=True, text=True, check=True).stdout


def main():
    problems = []
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    known_env = set()
    for binary, args in [("gateway", []), ("workers", ["simulate"]), ("workers", ["ingest"]),
                         ("workers", ["relay"]), ("workers", ["consume", "orders"]),
                         ("workers", ["consume", "purchases"]), ("workers", ["index"]),
                         ("workers", ["sync"])]:
        known_env |= set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", binary_help(binary, *args)))
    subcommands = set(re.findall(r"^  ([a-z]+)\s", binary_help("workers"), re.M)) - {"help"}

    for name, service in services.items():
        if "healthcheck" not in service:
            problems.append(f"{name}: no healthcheck")
        depends = service.get("depends_on", {})
        for dependency in depends:
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
            elif isinstance(depends, dict) and depends[dependency].get("condition") != "service_healthy":
                problems.append(f"{name}: should wait for {dependency} to be healthy")
        if "build" in service:
            command = service.get("command", [])
            if not command or command[0] not in ("gateway", "workers"):
                problems.append(f"{name}: runs {command}, not a hub binary")
            elif command[0] == "workers" and (len(command) < 2 or command[1] not in subcommands):
                problems.append(f"{name}: `workers {command[1:]}` is not a subcommand ({sorted(subcommands)})")
            for variable in service.get("environment", {}):
                if variable not in known_env:
                    problems.append(f"{name}: sets {variable}, which no binary reads")

    dockerfile = (ROOT / "Dockerfile").read_text()
    cargo = (ROOT / "Cargo.toml").read_text()
    wanted = re.search(r'rust-version = "(\d+)\.(\d+)"', cargo)
    used = re.search(r"FROM rust:(\d+)\.(\d+)", dockerfile)
    if not (wanted and used) or tuple(map(int, used.groups())) < tuple(map(int, wanted.groups())):
        problems.append("Dockerfile's rust image is older than the workspace rust-version")
    if "--locked" not in dockerfile:
        problems.append("Dockerfile must build with --locked")

    if problems:
        print("compose/Dockerfile problems:\n  " + "\n  ".join(problems))
        return 1
    print(f"compose.yaml: {len(services)} services checked, Dockerfile checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
