"""The API on one member: values, errors mapped to exceptions, threads sharing a handle."""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import pytest

import haven
from haven import _lib

from conftest import SECRET, free_ports


def test_abi_and_version_are_checked_at_import() -> None:
    assert haven._LIB.haven_abi_version() == haven.ABI_VERSION
    assert haven.library_version().count(".") == 2


def test_put_get_cas_delete_scan_with_bytes_and_str(member: haven.Db) -> None:
    member.put(b"k/1", b"\x00\xffbinary")
    member.put("k/2", "text é")
    assert member.get("k/1") == b"\x00\xffbinary"
    assert member.get(b"k/2") == "text é".encode()
    assert member.get("k/absent") is None
    member.put("k/empty", b"")
    assert member.get("k/empty") == b""
    assert member.cas("k/3", None, b"new") is True
    assert member.cas("k/3", None, b"again") is False
    assert member.cas("k/3", b"new", b"newer") is True
    assert member.scan("k/") == [
        (b"k/1", b"\x00\xffbinary"),
        (b"k/2", "text é".encode()),
        (b"k/3", b"newer"),
        (b"k/empty", b""),
    ]
    assert len(member.scan("k/", limit=2)) == 2
    assert member.delete("k/3") is True
    assert member.delete("k/3") is False
    with pytest.raises(TypeError):
        member.put(3, b"v")  # type: ignore[arg-type]


def test_a_64_mib_key_is_invalid_and_writes_nothing(member: haven.Db) -> None:
    # A write first: once it returns, the new leader's own first entry is committed too, so
    # the commit index moves only if the bad put writes something.
    member.put("sync", "1")
    before = member.status()["commit_index"]
    key = b"x" * (64 << 20)
    with pytest.raises(haven.InvalidArgument) as raised:
        member.put(key, b"v")
    assert raised.value.code == 1
    assert "key" in str(raised.value)
    with pytest.raises(haven.InvalidArgument):
        member.get(key)
    assert member.scan("x") == []
    assert member.status()["commit_index"] == before


def test_each_code_maps_to_its_exception_class(member: haven.Db, tmp_path: Path) -> None:
    expected = {
        1: haven.InvalidArgument, 2: haven.Unavailable, 3: haven.Timeout, 4: haven.Corrupt,
        5: haven.UnsupportedVersion, 6: haven.IoError, 7: haven.Auth, 8: haven.DataDir,
        9: haven.Fatal, 10: haven.LockNotHeld, 11: haven.SessionExpired, 12: haven.Compacted,
        13: haven.Closed, 14: haven.Internal,
    }
    for code, cls in expected.items():
        assert issubclass(cls, haven.Error)
        assert cls.code == code
        name = haven._LIB.haven_code_name(code).decode()
        assert name.startswith("HAVEN_ERR_")
    # Real failures, each from the layer that reports it.
    with pytest.raises(haven.Internal, match="deliberate panic"):
        haven._check(haven._LIB.haven_test_panic())
    with pytest.raises(haven.InvalidArgument, match="colour"):
        haven.open(id=1, listen="127.0.0.1:1", peers="1=127.0.0.1:1", data_dir=str(tmp_path), secret=SECRET, colour="blue")
    with pytest.raises(haven.InvalidArgument, match="secret"):
        haven.connect("127.0.0.1:1", secret="short")
    (port,) = free_ports(1)
    with pytest.raises(haven.Unavailable):
        haven.connect(f"127.0.0.1:{port}", secret=SECRET, connect_timeout=0.2, request_timeout=0.5)
    address = member.local_addr()
    with pytest.raises(haven.Auth):
        haven.connect(address, secret="another secret, long enough")
    # The data directory of a running member is locked (the `member` fixture uses tmp_path/m1).
    with pytest.raises(haven.DataDir):
        haven.open(id=1, listen="127.0.0.1:0", peers={1: address}, data_dir=str(tmp_path / "m1"), secret=SECRET)


def test_threads_share_one_handle(member: haven.Db) -> None:
    errors = []

    def writer(t: int) -> None:
        try:
            for i in range(25):
                member.put(f"t/{t:02}/{i:02}", str(i))
                assert member.get(f"t/{t:02}/{i:02}") == str(i).encode()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(member.scan("t/")) == 200


def test_close_waits_for_calls_and_later_calls_raise_closed(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    with haven.open(id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "d"), secret=SECRET) as db:
        db.put("k", "v")
    with pytest.raises(haven.Closed):
        db.put("k", "v")
    db.close()  # idempotent


def test_haven_logs_go_to_python_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="haven")
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    with haven.open(id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "d"), secret=SECRET) as db:
        db.put("k", "v")
    events = [r.getMessage() for r in caplog.records if r.name == "haven"]
    assert any("event=" in e for e in events), events


def test_every_declared_function_has_argtypes_and_restype() -> None:
    for name in ("haven_put", "haven_get", "haven_cas", "haven_scan", "haven_status_json"):
        function = getattr(haven._LIB, name)
        assert function.argtypes is not None
        assert function.restype is ctypes.c_int
    assert _lib.find_library().is_file()
