"""A 3-member cluster inside this Python process, and a remote client against `haven serve`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import haven

from conftest import FAST, SECRET, free_ports, wait_for


def test_three_members_in_one_process_replicate_and_answer_anywhere(tmp_path: Path) -> None:
    ports = free_ports(3)
    peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    members = []
    try:
        for node_id, address in peers.items():
            members.append(
                haven.open(
                    id=node_id,
                    listen=address,
                    peers=peers,
                    data_dir=str(tmp_path / f"m{node_id}"),
                    secret=SECRET,
                    **FAST,
                )
            )
        a, b, c = members
        a.put(b"config/mode", b"fast")
        assert b.get("config/mode") == b"fast"
        assert c.cas("config/mode", b"fast", "safe") is True
        assert c.cas("config/mode", b"fast", "again") is False
        assert a.get(b"config/mode") == b"safe"
        # Every member applies the write: a stale (local) read on each sees it eventually.
        for m in members:
            wait_for("replication", 10, lambda m=m: m.get("config/mode", stale=True) == b"safe")
        status = a.status()
        assert len(status["members"]) == 3
        leaders = {m.status()["leader"] for m in members}
        assert len(leaders) == 1 and None not in leaders
        assert b.delete("config/mode") is True
        assert c.get("config/mode") is None
    finally:
        for m in members:
            m.close()


def test_remote_client_against_haven_serve_processes(served_cluster: list) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            db = haven.connect(served_cluster, secret=SECRET, request_timeout=10.0)
            break
        except haven.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with db:
        db.put("remote/1", "one")
        db.put("remote/2", "two")
        assert db.get("remote/1") == b"one"
        assert db.scan("remote/") == [(b"remote/1", b"one"), (b"remote/2", b"two")]
        assert db.cas("remote/1", None, "x") is False
        assert db.status()["role"] in ("leader", "follower")
        assert [m["id"] for m in db.members()] == [1, 2, 3]
    assert db.closed
    with pytest.raises(haven.Closed):
        db.get("remote/1")
    with pytest.raises(haven.Auth):
        haven.connect(",".join(served_cluster), secret="a wrong secret, long enough")


def test_tls_member_and_client(tmp_path: Path) -> None:
    import subprocess

    from conftest import haven_binary

    certs = tmp_path / "tls"
    subprocess.run(
        [str(haven_binary()), "tls", "gen", "--dir", str(certs), "--members", "1", "--clients", "1"],
        check=True,
        capture_output=True,
    )
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    with haven.open(
        id=1,
        listen=address,
        peers={1: address},
        data_dir=str(tmp_path / "m1"),
        secret=SECRET,
        tls_cert=str(certs / "member-1.pem"),
        tls_key=str(certs / "member-1-key.pem"),
        tls_ca=str(certs / "ca.pem"),
        client_ca=str(certs / "client-ca.pem"),
        **FAST,
    ) as member:
        member.put("tls/1", "secret stuff")
        with haven.connect(
            address,
            secret=SECRET,
            tls_ca=str(certs / "ca.pem"),
            tls_cert=str(certs / "client-1.pem"),
            tls_key=str(certs / "client-1-key.pem"),
        ) as db:
            assert db.get("tls/1") == b"secret stuff"
        # Without a client certificate, or without TLS at all, the member refuses.
        with pytest.raises(haven.Auth):
            haven.connect(address, secret=SECRET, tls_ca=str(certs / "ca.pem"))
        with pytest.raises(haven.Auth):
            haven.connect(address, secret=SECRET)
    with pytest.raises(haven.InvalidArgument):
        haven.connect(address, secret=SECRET, tls_cert=str(certs / "client-1.pem"))
    with pytest.raises(haven.InvalidArgument):
        haven.open(
            id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "m2"), secret=SECRET,
            tls_cert=str(certs / "member-1.pem"),
        )
