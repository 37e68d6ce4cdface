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
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

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
    "LockNotHeld",
    "SessionExpired",
    "Timeout",
    "Unavailable",
    "UnsupportedVersion",
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


def _check(rc: int) -> None:
    if rc != 0:
        message = (_LIB.haven_last_error() or b"").decode("utf-8", "replace")
        raise _BY_CODE.get(rc, Error)(message, rc)


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


class Db:
    """A handle: a member in this process (:func:`open`) or a remote client (:func:`connect`).

    Thread safe: any number of threads may call it at once; :meth:`close` waits for calls in
    flight and later calls raise :class:`Closed`.
    """

    def __init__(self, handle: ctypes.c_void_p) -> None:
        self._handle: Optional[int] = handle.value
        self._active = 0
        self._state = threading.Condition()

    # A call holds a reference on the handle so close() cannot free it underneath.
    def _enter(self) -> int:
        with self._state:
            if self._handle is None:
                raise Closed("the handle is closed", Closed.code)
            self._active += 1
            return self._handle

    def _leave(self) -> None:
        with self._state:
            self._active -= 1
            if self._active == 0:
                self._state.notify_all()

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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._handle is None

    def close(self) -> None:
        """Close the handle (a member shuts down). Idempotent; waits for calls in flight."""
        with self._state:
            handle, self._handle = self._handle, None
            while self._active:
                self._state.wait()
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
) -> Db:
    """Connect to a cluster as a remote client through any of ``addrs`` ("h:p,h:p")."""
    if not isinstance(addrs, str):
        addrs = ",".join(addrs)
    options = Options()
    _check(_LIB.haven_options_init(ctypes.byref(options)))
    options.cluster_id = cluster_id
    options.request_timeout_ms = int(request_timeout * 1000)
    options.connect_timeout_ms = int(connect_timeout * 1000)
    options.read_mode = 1 if stale_reads else 0
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
    **settings: Any,
) -> Db:
    """Become a member in this process. ``peers``: every founding member, this one included
    (``{1: "127.0.0.1:7001", ...}`` or ``"1=h:p,2=h:p"``). ``settings``: any other key of
    ``haven_config_set`` (``election_timeout_ms=300``, ``cluster_id=2``, ...)."""
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
