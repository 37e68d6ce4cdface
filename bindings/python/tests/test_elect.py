"""Elections on one member: campaign, leader, proclaim, observe, resign, a second campaigner."""

from __future__ import annotations

import threading
from typing import List

import pytest

import haven


def test_campaign_leads_proclaims_and_resigns_on_exit(member: haven.Db) -> None:
    assert member.leader("primary") is None
    with member.campaign("primary", b"node-a", timeout=5.0) as leadership:
        assert isinstance(leadership.token, int) and leadership.token > 0
        assert member.leader("primary") == (b"node-a", leadership.token)
        leadership.proclaim("node-a:2")
        assert member.leader("primary") == haven.Leader(b"node-a:2", leadership.token)
        token = leadership.token
    assert member.leader("primary") is None
    # The leadership is over: a proclaim with its token is refused.
    leadership.token = token
    with pytest.raises(haven.LockNotHeld):
        leadership.proclaim(b"late")


def test_a_second_campaigner_times_out_then_takes_over(member: haven.Db) -> None:
    first = member.session(5.0)
    second = member.session(5.0)
    with member.campaign("primary", b"one", session=first) as leadership:
        # Not leading in time: the campaign is withdrawn and never leads.
        with pytest.raises(haven.Timeout):
            with member.campaign("primary", b"two", timeout=0.3, session=second):
                pass
        assert member.leader("primary") == (b"one", leadership.token)
        got: List[int] = []
        entered = threading.Event()

        def campaign() -> None:
            entered.set()
            with member.campaign("primary", b"two", session=second) as l2:  # until leading
                got.append(l2.token)
                assert member.leader("primary") == (b"two", l2.token)

        thread = threading.Thread(target=campaign)
        thread.start()
        entered.wait()
        first_token = leadership.token
    thread.join()
    assert len(got) == 1 and got[0] > first_token
    assert member.leader("primary") is None
    first.close()
    second.close()


def test_observe_reports_every_change_of_leader_in_order(member: haven.Db) -> None:
    with member.observe("primary") as observer:
        first = observer.get(timeout=30)
        assert first is not None and first.leader is None and not first.after_gap
        with member.campaign("primary", b"a") as leadership:
            leadership.proclaim(b"b")
            token = leadership.token
        seen = [observer.get(timeout=30) for _ in range(3)]
    assert [c.leader for c in seen if c is not None] == [
        haven.Leader(b"a", token),
        haven.Leader(b"b", token),
        None,
    ]
    revisions = [first.revision] + [c.revision for c in seen if c is not None]
    assert revisions == sorted(set(revisions))
    assert all(c is not None and c.session > 0 for c in seen[:2])
    # Closed: iteration ends.
    assert list(observer) == []


def test_observer_closed_from_another_thread_ends_the_iteration(member: haven.Db) -> None:
    observer = member.observe("primary")
    seen: List[haven.LeaderChange] = []

    def iterate() -> None:
        for change in observer:
            seen.append(change)

    thread = threading.Thread(target=iterate)
    thread.start()
    observer.close()
    thread.join()
    assert len(seen) <= 1
    observer.close()


def test_bad_election_arguments_raise_invalid_argument(member: haven.Db) -> None:
    with pytest.raises(haven.InvalidArgument):
        with member.campaign("", b"v", timeout=1):
            pass
    with pytest.raises(haven.InvalidArgument):
        with member.campaign("primary", b"x" * 5000, timeout=1):
            pass
    with pytest.raises(haven.InvalidArgument):
        member.campaign("primary", b"v", timeout=-1)
    with pytest.raises(haven.InvalidArgument):
        member.leader("")
    with pytest.raises(haven.InvalidArgument):
        member.observe("")
    assert member.leader("primary") is None
