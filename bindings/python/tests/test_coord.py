"""Sessions, locks, partition maps and watches on one member; threads sharing the handle."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import List

import pytest

import haven

from conftest import SECRET, free_ports, wait_for


def test_lock_yields_a_token_and_a_busy_lock_times_out(member: haven.Db) -> None:
    with member.lock("jobs", timeout=5.0) as token:
        assert isinstance(token, int) and token > 0
        assert member.check_token("jobs", token)
        with member.session(5.0) as other:
            with pytest.raises(haven.Timeout):
                with other.lock("jobs", timeout=0):
                    pass
            with pytest.raises(haven.Timeout):
                with other.lock("jobs", timeout=0.2):
                    pass
        [lock] = [l for l in member.locks() if l["name"] == "jobs"]
        assert [h["token"] for h in lock["holders"]] == [token]
    assert not member.check_token("jobs", token)
    # The next grant has a higher token.
    with member.lock("jobs", timeout=0) as later:
        assert later > token


def test_session_context_revokes_and_its_locks_end(member: haven.Db) -> None:
    with member.session(5.0) as session:
        assert session.id > 0
        assert session.state == "alive"
        lock = session.lock("backup", timeout=1.0)
        token = lock.acquire()
        assert member.check_token("backup", token)
    assert session.closed
    assert not member.check_token("backup", token)
    with pytest.raises(haven.Closed):
        session.revoke()
    other = member.session(5.0)
    other.revoke()
    assert other.state == "lost"
    with pytest.raises(haven.SessionExpired):
        with other.lock("backup", timeout=0):
            pass
    other.close()


def test_a_waiter_in_another_thread_gets_the_lock_when_it_is_released(member: haven.Db) -> None:
    got: List[int] = []
    holder = member.session(5.0)
    waiter = member.session(5.0)
    first = holder.lock("queue", timeout=0)
    token = first.acquire()

    def wait() -> None:
        with waiter.lock("queue") as t:  # no timeout: until granted
            got.append(t)

    thread = threading.Thread(target=wait)
    thread.start()
    wait_for("the waiter to queue", 30, lambda: any(l["waiters"] for l in member.locks() if l["name"] == "queue"))
    first.release()
    thread.join()
    assert len(got) == 1 and got[0] > token
    with pytest.raises(haven.LockNotHeld):
        first._held = (holder, token)
        first.release()
    holder.close()
    waiter.close()


def test_threads_share_one_handle_for_locks_and_writes(member: haven.Db) -> None:
    counter_key = b"counter"
    member.put(counter_key, b"0")
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                with member.lock("counter", timeout=30.0):
                    n = int(member.get(counter_key) or b"0")
                    member.put(counter_key, str(n + 1))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # The lock made each read-modify-write exclusive: no increment was lost.
    assert member.get(counter_key) == b"20"


def test_bad_lock_arguments_raise_invalid_argument(member: haven.Db) -> None:
    with pytest.raises(haven.InvalidArgument):
        with member.lock("", timeout=0):
            pass
    with pytest.raises(haven.InvalidArgument):
        member.lock("x", timeout=-1.0)


def test_owners_of_a_key(member: haven.Db) -> None:
    member.create_map("shards", 8, 2)
    member.join_map("shards", "a")
    member.join_map("shards", "b")
    member.join_map("shards", "c", weight=2)
    owners = member.owners("shards", "user/42")
    assert isinstance(owners, haven.Owners)
    assert owners.partition < 8 and owners.epoch >= 4
    assert len(owners.owners) == 2 and set(owners.owners) <= {"a", "b", "c"}
    member.leave_map("shards", "c")
    assert member.owners("shards", b"user/42").epoch > owners.epoch
    with pytest.raises(haven.InvalidArgument):
        member.owners("no-such-map", "k")


def test_watch_iterates_changes_under_a_prefix(member: haven.Db) -> None:
    with member.watch("w/") as watch:
        member.put("w/1", "one")
        member.put("x/1", "not watched")
        member.delete("w/1")
        first = next(watch)
        second = next(watch)
        assert first == haven.WatchEvent("put", first.revision, b"w/1", b"one")
        assert second.kind == "delete" and second.key == b"w/1" and second.revision > first.revision
        assert watch.get(timeout=0.05) is None
    with pytest.raises(StopIteration):
        next(watch)


def test_watch_closed_from_another_thread_ends_the_iteration(member: haven.Db) -> None:
    watch = member.watch(b"")
    seen: List[haven.WatchEvent] = []

    def consume() -> None:
        for event in watch:
            seen.append(event)

    thread = threading.Thread(target=consume)
    thread.start()
    member.put("k", "v")
    wait_for("the event", 30, lambda: len(seen) == 1)
    watch.close()
    thread.join()
    assert seen[0].key == b"k"
    watch.close()


def test_watch_from_a_revision_the_member_no_longer_has_raises_compacted(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    settings = dict(id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "m"), secret=SECRET)
    with haven.open(**settings) as db:
        db.put("c/1", "x")
    # A restarted member's window of recent events starts after what it applied before.
    with haven.open(**settings) as db:
        wait_for("a leader", 30, lambda: db.status()["role"] == "leader")
        with db.watch("c/", from_revision=1) as watch:
            with pytest.raises(haven.Compacted):
                next(watch)


def test_close_closes_watches_and_sessions(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    db = haven.open(id=1, listen=address, peers={1: address}, data_dir=str(tmp_path / "m"), secret=SECRET)
    watch = db.watch("a/")
    session = db.session(5.0)
    db.close()
    assert session.closed
    with pytest.raises(StopIteration):
        next(watch)
