"""haven: an embeddable, replicated storage engine, through its C ABI (pure ctypes).

>>> import haven
>>> with haven.connect("127.0.0.1:7001", secret="sixteen or more bytes") as db:  # doctest: +SKIP
...     db.put(b"k", b"v")
...     db.get("k")
b'v'

Keys and values are ``bytes`` (``str`` is accepted and UTF-8 encoded). A :class:`Db` may be
shared by threads (the C calls run without the GIL). haven's log events go to the
``logging`` logger named ``"haven"``. Every failure is a :class:`haven.Error` subclass chosen
by its status code.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import queue
import threading
from typing import Any, Dict, Generic, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Type, TypeVar, Union

from . import _lib
from ._lib import ABI_VERSION, Buf, Options, Record

__all__ = [
    "ABI_VERSION",
    "Auth",
    "Closed",
    "Compacted",
    "Corrupt",
    "DataDir",
    "Db",
    "Error",
    "Fatal",
    "Internal",
    "InvalidArgument",
    "IoError",
    "Leader",
    "LeaderChange",
    "Leadership",
    "LockNotHeld",
    "Observer",
    "Owners",
    "Session",
    "SessionExpired",
    "Timeout",
    "Unavailable",
    "UnsupportedVersion",
    "Watch",
    "WatchEvent",
    "WatchOverflow",
    "connect",
    "library_version",
    "open",
]

Bytes = Union[bytes, bytearray, memoryview, str]

_LIB = _lib.load()


class Error(Exception):
    """A failed haven call. ``code`` is the C status (``HAVEN_ERR_*``)."""

    code: int = -1

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(Error):
    """Bad input; nothing was changed."""

    code = 1


class Unavailable(Error):
    """Not applied (no leader, no quorum, member shutting down); safe to retry."""

    code = 2


class Timeout(Error):
    """The deadline passed; the operation MAY have been applied."""

    code = 3


class Corrupt(Error):
    """Bytes on disk or on the wire failed verification."""

    code = 4


class UnsupportedVersion(Error):
    """A format version this build does not understand."""

    code = 5


class IoError(Error):
    """An operating-system IO error."""

    code = 6


class Auth(Error):
    """The authenticated handshake failed (wrong secret or cluster id)."""

    code = 7


class DataDir(Error):
    """The data directory is locked or belongs to another node or cluster."""

    code = 8


class Fatal(Error):
    """A storage failure stopped the member."""

    code = 9


class LockNotHeld(Error):
    """A lock operation named a lock the caller does not hold."""

    code = 10


class SessionExpired(Error):
    """The session the operation relies on has expired."""

    code = 11


class Compacted(Error):
    """The revision asked for is older than the member keeps."""

    code = 12


class WatchOverflow(Compacted):
    """A watch fell further behind than its member buffers for it: re-read and watch again
    (the same recovery as :class:`Compacted`)."""


class Closed(Error):
    """The handle is closed."""

    code = 13


class Internal(Error):
    """A bug inside haven."""

    code = 14


_BY_CODE: Dict[int, Type[Error]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unavailable,
        Timeout,
        Corrupt,
        UnsupportedVersion,
        IoError,
        Auth,
        DataDir,
        Fatal,
        LockNotHeld,
        SessionExpired,
        Compacted,
        Closed,
        Internal,
    )
}


def _error(rc: int, message: str) -> Error:
    return _BY_CODE.get(rc, Error)(message, rc)


def _check(rc: int) -> None:
    if rc != 0:
        raise _error(rc, (_LIB.haven_last_error() or b"").decode("utf-8", "replace"))


def _bytes(value: Bytes) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes or str, got {type(value).__name__}")


def library_version() -> str:
    """The loaded libhaven's release (``haven_version()``)."""
    return _LIB.haven_version().decode()


# ----- logging -----

_LOGGER = logging.getLogger("haven")
_PY_LEVEL = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: 5}


def _on_log(_user_data: Optional[int], level: int, message: Optional[bytes]) -> None:
    try:
        _LOGGER.log(_PY_LEVEL.get(level, logging.INFO), "%s", (message or b"").decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - an exception must never cross back into haven
        pass


# Kept referenced for the life of the process: haven may call it from any of its threads.
_LOG_CALLBACK = _lib.LOG_FN(_on_log)
_check(_LIB.haven_set_log_callback(_LOG_CALLBACK, None, 3))


@atexit.register
def _stop_logging() -> None:
    # No callbacks into an interpreter that is shutting down.
    _LIB.haven_set_log_callback(_lib.LOG_FN(), None, 0)


# ----- handles -----


class _Handle:
    """A C handle that calls hold while they run, so that closing it never frees it under a
    call in flight: :meth:`_release` waits for them, later calls raise :class:`Closed`."""

    def __init__(self, handle: Optional[int], what: str) -> None:
        self._handle: Optional[int] = handle
        self._what = what
        self._active = 0
        self._state = threading.Condition()

    def _enter(self) -> int:
        with self._state:
            if self._handle is None:
                raise Closed(f"the {self._what} is closed", Closed.code)
            self._active += 1
            return self._handle

    def _leave(self) -> None:
        with self._state:
            self._active -= 1
            if self._active == 0:
                self._state.notify_all()

    def _release(self) -> Optional[int]:
        """Mark closed, wait for calls in flight; the raw handle to free (None if done)."""
        with self._state:
            handle, self._handle = self._handle, None
            while self._active:
                self._state.wait()
        return handle

    @property
    def closed(self) -> bool:
        """Whether it was closed."""
        return self._handle is None


class Owners(NamedTuple):
    """The owners of a key in a partition map (:meth:`Db.owners`)."""

    epoch: int
    """The epoch of the table that answered."""
    partition: int
    """The key's partition."""
    owners: List[str]
    """Its owners, primary first."""


class WatchEvent(NamedTuple):
    """One change under a watched prefix."""

    kind: str
    """``"put"`` or ``"delete"``."""
    revision: int
    """The revision (log index) of the change; one revision's events come together."""
    key: bytes
    value: bytes
    """The new value (``b""`` for a delete)."""


class Leader(NamedTuple):
    """Who leads an election (:meth:`Db.leader`)."""

    value: bytes
    """The value it published (with its campaign, or its latest proclaim)."""
    token: int
    """The fencing token of its leadership (strictly increasing per election)."""


class LeaderChange(NamedTuple):
    """A change of an election's leader (:meth:`Db.observe`)."""

    revision: int
    """The revision (log index) of the change; of the first one, of the read it came from."""
    leader: Optional[Leader]
    """Who leads from then on; ``None``: nobody."""
    session: int
    """The leader's session id (0 when nobody leads)."""
    after_gap: bool
    """Changes between the previous one and this one may be missing (never on the first)."""


_SESSION_STATES = {0: "alive", 1: "unknown", 2: "lost"}


class Session(_Handle):
    """A session (lease) kept alive in the background by haven while it is open. Leaving its
    ``with`` block revokes it (its locks are released at once); :meth:`close` only stops the
    keepalives (it then expires after its TTL)."""

    def __init__(self, db: "Db", handle: ctypes.c_void_p) -> None:
        super().__init__(handle.value, "session")
        self._db = db

    @property
    def id(self) -> int:
        """The session's id."""
        out = ctypes.c_uint64(0)
        handle = self._enter()
        try:
            _check(_LIB.haven_session_id(handle, ctypes.byref(out)))
        finally:
            self._leave()
        return out.value

    @property
    def state(self) -> str:
        """``"alive"``, ``"unknown"`` (no keepalive answered for longer than the TTL: it may
        be gone; treat its locks as possibly lost) or ``"lost"`` (final)."""
        out = ctypes.c_int(0)
        handle = self._enter()
        try:
            _check(_LIB.haven_session_state(handle, ctypes.byref(out)))
        finally:
            self._leave()
        return _SESSION_STATES.get(out.value, "unknown")

    def lock(self, name: str, timeout: Optional[float] = None, *, shared: bool = False) -> "_Lock":
        """:meth:`Db.lock` through this session."""
        return _Lock(self._db, self, name, timeout, shared)

    def revoke(self) -> None:
        """End the session now: its locks are released, its ephemeral keys deleted."""
        handle = self._enter()
        try:
            _check(_LIB.haven_session_revoke(handle))
        finally:
            self._leave()

    def close(self) -> None:
        """Stop keeping it alive (idempotent). It expires after its TTL unless revoked."""
        handle = self._release()
        if handle is not None:
            _LIB.haven_session_free(handle)
        self._db._forget(self)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *_exc: Any) -> None:
        try:
            if not self.closed:
                self.revoke()
        finally:
            self.close()


def _wait_ms(timeout: Optional[float]) -> int:
    """A ``timeout`` in seconds as the C calls' ``wait_ms`` (-1: no limit)."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise InvalidArgument(f"timeout: {timeout} is negative", InvalidArgument.code)
    return 0 if timeout == 0 else max(1, int(timeout * 1000))


class _Lock:
    """The context manager of :meth:`Db.lock`: acquires on enter (returns the fencing
    token), releases on exit."""

    def __init__(self, db: "Db", session: Optional[Session], name: str, timeout: Optional[float], shared: bool) -> None:
        self._wait_ms = _wait_ms(timeout)
        self._db, self._session, self._name = db, session, name.encode("utf-8")
        self._mode = 1 if shared else 0
        self._held: Optional[Tuple[Session, int]] = None

    def acquire(self) -> int:
        """Take the lock; its fencing token (an int > 0). :class:`Timeout` if not granted in
        time (the request is then withdrawn)."""
        session = self._session or self._db._default_session()
        token = ctypes.c_uint64(0)
        handle = self._db._enter()
        try:
            s = session._enter()
            try:
                _check(_LIB.haven_lock(handle, s, self._name, self._mode, self._wait_ms, ctypes.byref(token)))
            finally:
                session._leave()
        finally:
            self._db._leave()
        self._held = (session, token.value)
        return token.value

    def release(self) -> None:
        """Release it; :class:`LockNotHeld` if the grant was gone (its session ended)."""
        if self._held is None:
            return
        session, token = self._held
        self._held = None
        handle = self._db._enter()
        try:
            s = session._enter()
            try:
                _check(_LIB.haven_unlock(handle, s, self._name, token))
            finally:
                session._leave()
        finally:
            self._db._leave()

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        try:
            self.release()
        except Error:
            # Best effort, as a Rust LockGuard's drop: the grant may have ended with its
            # session. Raised only when the block itself succeeded.
            if exc_type is None:
                raise


class Leadership:
    """The context manager of :meth:`Db.campaign`: campaigns on enter (returns itself once
    leading), resigns on exit. :attr:`token` is the leadership's fencing token."""

    def __init__(self, db: "Db", session: Optional[Session], name: str, value: Bytes, timeout: Optional[float]) -> None:
        self._wait_ms = _wait_ms(timeout)
        self._db, self._session = db, session
        self._name, self._value = name.encode("utf-8"), _bytes(value)
        self.token: Optional[int] = None

    def campaign(self) -> "Leadership":
        """Campaign and block until leading; :class:`Timeout` if not leading in time (the
        campaign is then withdrawn)."""
        session = self._session or self._db._default_session()
        token = ctypes.c_uint64(0)
        handle = self._db._enter()
        try:
            s = session._enter()
            try:
                _check(
                    _LIB.haven_campaign(
                        handle, s, self._name, self._value, len(self._value), self._wait_ms, ctypes.byref(token)
                    )
                )
            finally:
                session._leave()
        finally:
            self._db._leave()
        self.token = token.value
        return self

    def proclaim(self, value: Bytes) -> None:
        """Publish ``value`` as the leader's value; :class:`LockNotHeld` if no longer leading."""
        if self.token is None:
            raise LockNotHeld("not leading", LockNotHeld.code)
        v = _bytes(value)
        self._db._call("haven_proclaim", self._name, self.token, v, len(v))

    def resign(self) -> None:
        """Step down; :class:`LockNotHeld` if the leadership was over (its session ended)."""
        if self.token is None:
            return
        token, self.token = self.token, None
        self._db._call("haven_resign", self._name, token)

    def __enter__(self) -> "Leadership":
        return self.campaign()

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        try:
            self.resign()
        except Error:
            # Best effort, as a Rust Leadership's drop. Raised only when the block succeeded.
            if exc_type is None:
                raise


_T = TypeVar("_T")
_S = TypeVar("_S", bound="_Stream[Any]")


class _Stream(Generic[_T]):
    """What a watch and an observer share: items arrive on a haven thread (the subclass's
    callback puts them in the queue) and are taken here, blocking; an :class:`Error` ends the
    stream by being raised, :meth:`close` by ``StopIteration``. A subclass opens its handle
    with the C call that starts it and names the C call that cancels it in ``_CANCEL``."""

    _CLOSED = object()
    _CANCEL = ""

    def __init__(self, db: "Db") -> None:
        self._db = db
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._done = False
        self._lock = threading.Lock()
        self._handle: Optional[int] = None

    def get(self, timeout: Optional[float] = None) -> Optional[_T]:
        """The next item, waiting at most ``timeout`` seconds (None: no limit); ``None`` on
        timeout. Raises as iteration does at the end."""
        if self._done:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _Stream._CLOSED:
            self._done = True
            raise StopIteration
        if isinstance(item, Error):
            self._done = True
            raise item
        return item  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[_T]:
        return self

    def __next__(self) -> _T:
        while True:
            item = self.get()
            if item is not None:
                return item

    def close(self) -> None:
        """Stop (idempotent, from any thread): nothing is added after it returns; an iteration
        blocked in another thread ends with ``StopIteration``."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            getattr(_LIB, self._CANCEL)(handle)
            self._queue.put(_Stream._CLOSED)
            self._db._forget(self)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to from a finalizer
            pass


class Observer(_Stream[LeaderChange]):
    """An iterator of :class:`LeaderChange` (blocking): the leader when it started, then every
    change. Closed with :meth:`close` or by leaving its ``with`` block (iteration then ends
    with ``StopIteration``); raises an :class:`Error` when it cannot go on."""

    _CANCEL = "haven_observe_cancel"

    def __init__(self, db: "Db", name: str) -> None:
        super().__init__(db)
        # Kept referenced for the life of the observer: haven calls it from its thread.
        self._callback = _lib.OBSERVE_FN(self._on_change)
        handle = ctypes.c_void_p()
        db._call("haven_observe", name.encode("utf-8"), self._callback, None, ctypes.byref(handle))
        self._handle = handle.value

    def _on_change(self, _user_data: Optional[int], change_p: Any) -> None:
        try:
            c = change_p.contents
            if c.kind == 0:
                value = ctypes.string_at(c.value, c.value_len) if c.value_len else b""
                self._queue.put(LeaderChange(c.revision, Leader(value, c.token), c.session, bool(c.after_gap)))
            elif c.kind == 1:
                self._queue.put(LeaderChange(c.revision, None, 0, bool(c.after_gap)))
            else:
                self._queue.put(_error(c.code, (c.message or b"").decode("utf-8", "replace")))
        except Exception:  # noqa: BLE001 - an exception must never cross back into haven
            pass


class Watch(_Stream[WatchEvent]):
    """An iterator of :class:`WatchEvent` (blocking), closed with :meth:`close` or by leaving
    its ``with`` block. The events arrive on a haven thread and wait in a queue here. It ends
    by raising :class:`Compacted` (or :class:`WatchOverflow`) when the member cannot deliver
    what is needed (re-read, then watch from the read's revision + 1), another
    :class:`Error` when it cannot go on, and ``StopIteration`` once closed."""

    _CANCEL = "haven_watch_cancel"

    def __init__(self, db: "Db", prefix: bytes, from_revision: int) -> None:
        super().__init__(db)
        # Kept referenced for the life of the watch: haven calls it from the watch's thread.
        self._callback = _lib.WATCH_FN(self._on_event)
        handle = ctypes.c_void_p()
        db._call("haven_watch", prefix, len(prefix), from_revision, self._callback, None, ctypes.byref(handle))
        self._handle = handle.value

    def _on_event(self, _user_data: Optional[int], event_p: Any) -> None:
        try:
            e = event_p.contents
            if e.kind in (0, 1):
                key = ctypes.string_at(e.key, e.key_len) if e.key_len else b""
                value = ctypes.string_at(e.value, e.value_len) if e.value_len else b""
                self._queue.put(WatchEvent("put" if e.kind == 0 else "delete", e.revision, key, value))
            elif e.kind == 3:
                message = (e.message or b"").decode("utf-8", "replace")
                error: Error
                if e.code == Compacted.code and message.startswith("overflow"):
                    error = WatchOverflow(message, e.code)
                else:
                    error = _error(e.code, message)
                self._queue.put(error)
        except Exception:  # noqa: BLE001 - an exception must never cross back into haven
            pass


class Db(_Handle):
    """A handle: a member in this process (:func:`open`) or a remote client (:func:`connect`).

    Thread safe: any number of threads may call it at once; :meth:`close` waits for calls in
    flight and later calls raise :class:`Closed`.
    """

    #: TTL of the session :meth:`lock` uses when it is given none.
    DEFAULT_SESSION_TTL = 10.0

    def __init__(self, handle: ctypes.c_void_p) -> None:
        super().__init__(handle.value, "handle")
        self._children: Dict[int, Any] = {}
        self._local = threading.local()
        self._children_lock = threading.Lock()

    def _adopt(self, child: Any) -> Any:
        with self._children_lock:
            self._children[id(child)] = child
        return child

    def _forget(self, child: Any) -> None:
        with self._children_lock:
            self._children.pop(id(child), None)

    def _call(self, name: str, *args: Any) -> None:
        handle = self._enter()
        try:
            _check(getattr(_LIB, name)(handle, *args))
        finally:
            self._leave()

    def put(self, key: Bytes, value: Bytes) -> None:
        """Store ``value`` under ``key``."""
        k, v = _bytes(key), _bytes(value)
        self._call("haven_put", k, len(k), v, len(v))

    def get(self, key: Bytes, *, stale: bool = False) -> Optional[bytes]:
        """The value of ``key``, ``None`` if absent. ``stale``: read the member's local state
        at once (may miss recent writes) instead of a linearizable read."""
        k = _bytes(key)
        buf, found = Buf(), ctypes.c_int(0)
        self._call("haven_get_with", 1 if stale else 0, k, len(k), ctypes.byref(buf), ctypes.byref(found))
        try:
            return buf.take() if found.value else None
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    def delete(self, key: Bytes) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        k = _bytes(key)
        existed = ctypes.c_int(0)
        self._call("haven_delete", k, len(k), ctypes.byref(existed))
        return bool(existed.value)

    def cas(self, key: Bytes, expected: Optional[Bytes], new_value: Bytes) -> bool:
        """Store ``new_value`` if the value is ``expected`` (``None``: if the key is absent)."""
        k, n = _bytes(key), _bytes(new_value)
        e = None if expected is None else _bytes(expected)
        swapped = ctypes.c_int(0)
        self._call(
            "haven_cas",
            k,
            len(k),
            e,
            0 if e is None else len(e),
            1 if e is None else 0,
            n,
            len(n),
            ctypes.byref(swapped),
        )
        return bool(swapped.value)

    def scan(self, prefix: Bytes = b"", limit: int = 1000) -> List[Tuple[bytes, bytes]]:
        """Up to ``limit`` (key, value) pairs whose key starts with ``prefix``, in key order."""
        p = _bytes(prefix)
        buf, count, more = Buf(), ctypes.c_size_t(0), ctypes.c_int(0)
        self._call("haven_scan", p, len(p), limit, ctypes.byref(buf), ctypes.byref(count), ctypes.byref(more))
        try:
            entries: List[Tuple[bytes, bytes]] = []
            offset, record = ctypes.c_size_t(0), Record()
            while offset.value < buf.len:
                _check(_LIB.haven_record_next(ctypes.byref(buf), ctypes.byref(offset), ctypes.byref(record)))
                key = ctypes.string_at(record.key, record.key_len)
                value = ctypes.string_at(record.value, record.value_len) if record.value_len else b""
                entries.append((key, value))
            return entries
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    def _json(self, name: str) -> Any:
        buf = Buf()
        self._call(name, ctypes.byref(buf))
        try:
            return json.loads(buf.take().decode("utf-8"))
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    def status(self) -> Dict[str, Any]:
        """The member's status (see ``haven_status_json``): role, term, leader, members, ..."""
        return self._json("haven_status_json")

    def members(self) -> List[Dict[str, Any]]:
        """The configuration in force: ``[{"id", "address", "voter", ...}]``."""
        return self._json("haven_members_json")

    def add_learner(self, node_id: int, address: str) -> None:
        """Add member ``node_id`` at ``address`` as a learner; returns once committed."""
        self._call("haven_add_learner", node_id, address.encode())

    def promote_learner(self, node_id: int) -> None:
        """Make learner ``node_id`` a voter."""
        self._call("haven_promote_learner", node_id)

    def remove_member(self, node_id: int) -> None:
        """Remove member ``node_id``."""
        self._call("haven_remove_member", node_id)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter ``to``; returns once it leads."""
        self._call("haven_transfer_leadership", to)

    def local_addr(self) -> str:
        """The address this process's member listens on (members only)."""
        buf = Buf()
        self._call("haven_local_addr", ctypes.byref(buf))
        try:
            return buf.take().decode()
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    # ----- sessions, locks, partition maps, watches -----

    def session(self, ttl: float = 10.0) -> Session:
        """Grant a session of ``ttl`` seconds, kept alive in the background while it is open
        (``with db.session(10) as s:`` revokes it at the end)."""
        handle = ctypes.c_void_p()
        self._call("haven_session_grant", max(1, int(ttl * 1000)), ctypes.byref(handle))
        return self._adopt(Session(self, handle))

    def _default_session(self) -> Session:
        # One per thread: a session holds a lock once, so threads that contend for a lock
        # through the handle need sessions of their own.
        current: Optional[Session] = getattr(self._local, "session", None)
        if current is not None and not current.closed and current.state != "lost":
            return current
        if current is not None:
            current.close()
        fresh = self.session(self.DEFAULT_SESSION_TTL)
        self._local.session = fresh
        return fresh

    def lock(
        self,
        name: str,
        timeout: Optional[float] = None,
        *,
        shared: bool = False,
        session: Optional[Session] = None,
    ) -> _Lock:
        """``with db.lock("name", timeout=5.0) as token:`` holds lock ``name`` for the block;
        ``token`` is the grant's fencing token (an int > 0): pass it with every write to the
        protected resource. ``timeout``: seconds to wait (``0``: try once; ``None``: until
        granted); not granted in time -> :class:`Timeout`. Held through ``session``, or the
        calling thread's session of this handle (granted on first use, TTL
        :attr:`DEFAULT_SESSION_TTL`, kept alive until :meth:`close`), so threads sharing a
        handle exclude each other."""
        return _Lock(self, session, name, timeout, shared)

    def check_token(self, name: str, token: int) -> bool:
        """Whether ``token`` is a current grant of lock ``name`` (a linearizable read)."""
        valid = ctypes.c_int(0)
        self._call("haven_check_token", name.encode("utf-8"), token, ctypes.byref(valid))
        return bool(valid.value)

    def locks(self) -> List[Dict[str, Any]]:
        """Every lock with holders or waiters (see ``haven_locks_json``)."""
        return self._json("haven_locks_json")

    def create_map(self, name: str, partitions: int, replicas: int) -> None:
        """Create partition map ``name``."""
        self._call("haven_map_create", name.encode("utf-8"), partitions, replicas)

    def join_map(self, name: str, owner: str, weight: int = 1) -> None:
        """Owner ``owner`` joins map ``name`` with ``weight``."""
        self._call("haven_map_join", name.encode("utf-8"), owner.encode("utf-8"), weight)

    def leave_map(self, name: str, owner: str) -> None:
        """Owner ``owner`` leaves map ``name``."""
        self._call("haven_map_leave", name.encode("utf-8"), owner.encode("utf-8"))

    def owners(self, map: str, key: Bytes) -> Owners:  # noqa: A002 - the map's name
        """The partition of ``key`` in partition map ``map`` and its owners, primary first.
        :class:`InvalidArgument` if there is no such map."""
        k = _bytes(key)
        epoch, partition, buf = ctypes.c_uint64(0), ctypes.c_uint32(0), Buf()
        self._call(
            "haven_owners", map.encode("utf-8"), k, len(k), ctypes.byref(epoch), ctypes.byref(partition), ctypes.byref(buf)
        )
        try:
            ids: List[str] = []
            offset, record = ctypes.c_size_t(0), Record()
            while offset.value < buf.len:
                _check(_LIB.haven_record_next(ctypes.byref(buf), ctypes.byref(offset), ctypes.byref(record)))
                ids.append(ctypes.string_at(record.key, record.key_len).decode("utf-8", "replace"))
            return Owners(epoch.value, partition.value, ids)
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    def campaign(
        self, name: str, value: Bytes = b"", timeout: Optional[float] = None, *, session: Optional[Session] = None
    ) -> Leadership:
        """``with db.campaign("name", b"value", timeout=5.0) as leadership:`` leads election
        ``name`` for the block (resigns at its end); ``leadership.token`` is the fencing token,
        ``leadership.proclaim(v)`` publishes a new value. ``timeout``: seconds to wait (None:
        until leading); not leading in time -> :class:`Timeout` (the campaign is withdrawn).
        Through ``session``, or the calling thread's session of this handle (as :meth:`lock`)."""
        return Leadership(self, session, name, value, timeout)

    def leader(self, name: str) -> Optional[Leader]:
        """Who leads election ``name`` (``(value, token)``), ``None`` if nobody (a
        linearizable read)."""
        buf, token, found = Buf(), ctypes.c_uint64(0), ctypes.c_int(0)
        self._call("haven_leader", name.encode("utf-8"), ctypes.byref(buf), ctypes.byref(token), None, ctypes.byref(found))
        try:
            return Leader(buf.take(), token.value) if found.value else None
        finally:
            _LIB.haven_buf_free(ctypes.byref(buf))

    def observe(self, name: str) -> Observer:
        """``for change in db.observe(name):`` the leader of election ``name`` now, then every
        change of leader (a new leader, a proclaim, nobody), in order."""
        return self._adopt(Observer(self, name))

    def watch(self, prefix: Bytes = b"", from_revision: int = 0) -> Watch:
        """``for event in db.watch(prefix):`` every change under ``prefix`` from
        ``from_revision`` (0: from now on), in order, with no gap and no duplicate."""
        return self._adopt(Watch(self, _bytes(prefix), from_revision))

    def close(self) -> None:
        """Close the handle (a member shuts down): its watches are closed and its sessions'
        keepalives stopped first. Idempotent; waits for calls in flight."""
        with self._children_lock:
            children = list(self._children.values())
        for child in children:
            try:
                child.close()
            except Error:
                pass
        handle = self._release()
        if handle is not None:
            _check(_LIB.haven_close_status(handle))

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to from a finalizer
            pass


def connect(
    addrs: Union[str, List[str]],
    secret: Union[str, bytes],
    *,
    cluster_id: int = 1,
    request_timeout: float = 5.0,
    connect_timeout: float = 1.0,
    stale_reads: bool = False,
    tls_ca: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
) -> Db:
    """Connect to a cluster as a remote client through any of ``addrs`` ("h:p,h:p").
    ``tls_ca``: path of the CA that signed the members' certificates (TLS; None: plaintext);
    ``tls_cert``/``tls_key``: this client's certificate and key, when members require one."""
    if not isinstance(addrs, str):
        addrs = ",".join(addrs)
    options = Options()
    _check(_LIB.haven_options_init(ctypes.byref(options)))
    options.cluster_id = cluster_id
    options.request_timeout_ms = int(request_timeout * 1000)
    options.connect_timeout_ms = int(connect_timeout * 1000)
    options.read_mode = 1 if stale_reads else 0
    options.tls_ca = None if tls_ca is None else str(tls_ca).encode()
    options.tls_cert = None if tls_cert is None else str(tls_cert).encode()
    options.tls_key = None if tls_key is None else str(tls_key).encode()
    handle = ctypes.c_void_p()
    _check(_LIB.haven_connect_with(addrs.encode(), _bytes(secret), ctypes.byref(options), ctypes.byref(handle)))
    return Db(handle)


def open(  # noqa: A001 - haven.open mirrors haven_open
    *,
    id: int,  # noqa: A002 - the member's id, as haven calls it
    listen: str,
    peers: Union[str, Mapping[int, str]],
    data_dir: str,
    secret: Union[str, bytes],
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    tls_ca: Optional[str] = None,
    client_ca: Optional[str] = None,
    **settings: Any,
) -> Db:
    """Become a member in this process. ``peers``: every founding member, this one included
    (``{1: "127.0.0.1:7001", ...}`` or ``"1=h:p,2=h:p"``). TLS on every connection:
    ``tls_cert``, ``tls_key``, ``tls_ca`` (paths: this member's certificate and key, the
    member CA; all three or none), ``client_ca`` (clients must then present a certificate it
    signed). ``settings``: any other key of ``haven_config_set`` (``election_timeout_ms=300``,
    ``cluster_id=2``, ``client_secret=...``)."""
    tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca, "client_ca": client_ca}
    settings.update({key: str(value) for key, value in tls.items() if value is not None})
    if not isinstance(peers, str):
        peers = ",".join(f"{node}={address}" for node, address in peers.items())
    values: Dict[str, Any] = {
        "id": id,
        "listen": listen,
        "peers": peers,
        "data_dir": str(data_dir),
        "secret": secret.decode() if isinstance(secret, bytes) else secret,
        **settings,
    }
    cfg = ctypes.c_void_p()
    _check(_LIB.haven_config_new(ctypes.byref(cfg)))
    try:
        for key, value in values.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            _check(_LIB.haven_config_set(cfg, str(key).encode(), str(value).encode()))
        handle = ctypes.c_void_p()
        _check(_LIB.haven_open(cfg, ctypes.byref(handle)))
    finally:
        _LIB.haven_config_free(cfg)
    return Db(handle)
