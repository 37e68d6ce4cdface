"""The README's Python example, run: tests/ffi_header.rs checks that the README shows exactly
the marked part of this file."""

from __future__ import annotations

import haven

from conftest import SECRET


def test_readme_example(member: haven.Db, capsys) -> None:  # type: ignore[no-untyped-def]
    addresses, secret = member.local_addr(), SECRET
    # README:begin
    with haven.connect(addresses, secret=secret) as db:  # or haven.open(...): a member
        db.put(b"config/mode", b"fast")
        assert db.get("config/mode") == b"fast"  # str is UTF-8 encoded; None if absent
        assert db.cas("config/mode", b"fast", b"safe")  # compare-and-swap
        with db.lock("backup", timeout=5.0) as token:  # haven.Timeout if not granted
            print("holding backup, fencing token", token)
        with db.watch("jobs/") as watch:
            db.put("jobs/1", "queued")
            for event in watch:  # blocks; close() from any thread ends it
                print(event.kind, event.key, event.value)
                break
        with db.campaign("scheduler", b"10.0.0.7", timeout=5.0) as leadership:  # resigns at exit
            leadership.proclaim(b"10.0.0.8")  # haven.LockNotHeld once no longer leading
            assert db.leader("scheduler") == (b"10.0.0.8", leadership.token)
        with db.observe("scheduler") as observer:
            for change in observer:  # the leader now, then every change
                print("leader:", change.leader)  # None: nobody leads
                break
    # README:end
    out = capsys.readouterr().out
    assert "holding backup, fencing token" in out
    assert "put b'jobs/1' b'queued'" in out
    assert "leader: None" in out
