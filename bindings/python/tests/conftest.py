"""Shared fixtures: free loopback ports, one member in this process, `haven serve` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

import haven

SECRET = "sixteen or more bytes of secret"

# Fast timings, as the Rust cluster tests use (two cores shared by several clusters).
FAST = dict(tick_ms=5, election_timeout_ms=100, heartbeat_interval_ms=20, state_cache_bytes=8 << 20)


def free_ports(n: int) -> List[int]:
    """``n`` distinct free loopback ports (bound together, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(what: str, timeout: float, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[haven.Db]:
    """A single-member cluster in this process, its leader elected."""
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    db = haven.open(
        id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "m1"), secret=SECRET, **FAST
    )
    try:
        wait_for("a leader", 10, lambda: db.status()["role"] == "leader")
        yield db
    finally:
        db.close()


def haven_binary() -> Path:
    env = os.environ.get("HAVEN_BIN")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        for profile in ("release", "debug"):
            candidate = parent / "target" / profile / "haven"
            if candidate.is_file():
                return candidate
    pytest.skip("no haven binary: set HAVEN_BIN or run `cargo build --release --bin haven`")
    raise AssertionError("unreachable")


@pytest.fixture
def served_cluster(tmp_path: Path) -> Iterator[List[str]]:
    """Three `haven serve` processes on 127.0.0.1; yields their addresses. The processes are
    killed however the test ends."""
    binary = haven_binary()
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    ports = free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    peers = ",".join(f"{i + 1}={a}" for i, a in enumerate(addresses))
    processes: List[subprocess.Popen] = []
    try:
        for i, address in enumerate(addresses):
            log = open(tmp_path / f"serve-{i + 1}.log", "wb")
            processes.append(
                subprocess.Popen(
                    [
                        str(binary), "serve",
                        "--id", str(i + 1),
                        "--listen", address,
                        "--peers", peers,
                        "--data-dir", str(tmp_path / f"d{i + 1}"),
                        "--secret-file", str(secret_file),
                        "--state-cache-mib", "8",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            log.close()
        yield addresses
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
