"""Loading libhaven and declaring every C function's argtypes and restype."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import List, Optional

#: The ABI this module was written against (``HAVEN_ABI_VERSION`` in haven.h).
ABI_VERSION = 1

_NAMES = ("libhaven.so", "libhaven.dylib")


class Buf(ctypes.Structure):
    """``haven_buf_t``: bytes the library allocated, freed with ``haven_buf_free``."""

    _fields_ = [("data", ctypes.POINTER(ctypes.c_uint8)), ("len", ctypes.c_size_t)]

    def take(self) -> bytes:
        """Copy the bytes out (the caller frees the buffer)."""
        if not self.data or self.len == 0:
            return b""
        return ctypes.string_at(self.data, self.len)


class Record(ctypes.Structure):
    """``haven_record_t``: one record of a scan or transaction buffer."""

    _fields_ = [
        ("key", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("value", ctypes.c_void_p),
        ("value_len", ctypes.c_size_t),
        ("has_value", ctypes.c_int),
    ]


class Options(ctypes.Structure):
    """``haven_options_t``: a remote client's options."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("cluster_id", ctypes.c_uint64),
        ("request_timeout_ms", ctypes.c_uint64),
        ("connect_timeout_ms", ctypes.c_uint64),
        ("read_mode", ctypes.c_int),
        ("prefer_leader", ctypes.c_int),
        ("tls_ca", ctypes.c_char_p),
        ("tls_cert", ctypes.c_char_p),
        ("tls_key", ctypes.c_char_p),
    ]


class WatchEvent(ctypes.Structure):
    """``haven_watch_event_t``: one call of a watch callback (pointers valid during it)."""

    _fields_ = [
        ("kind", ctypes.c_int),
        ("revision", ctypes.c_uint64),
        ("key", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("value", ctypes.c_void_p),
        ("value_len", ctypes.c_size_t),
        ("code", ctypes.c_int),
        ("message", ctypes.c_char_p),
    ]


class LeaderChange(ctypes.Structure):
    """``haven_leader_change_t``: one call of an observe callback (pointers valid during it)."""

    _fields_ = [
        ("kind", ctypes.c_int),
        ("revision", ctypes.c_uint64),
        ("value", ctypes.c_void_p),
        ("value_len", ctypes.c_size_t),
        ("token", ctypes.c_uint64),
        ("session", ctypes.c_uint64),
        ("after_gap", ctypes.c_int),
        ("code", ctypes.c_int),
        ("message", ctypes.c_char_p),
    ]


LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
WATCH_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(WatchEvent))
OBSERVE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(LeaderChange))


def _candidates() -> List[Path]:
    found: List[Path] = []
    env = os.environ.get("HAVEN_LIBRARY")
    if env:
        found.append(Path(env))
    here = Path(__file__).resolve().parent
    found += [here / name for name in _NAMES]
    target_dirs: List[Path] = []
    if os.environ.get("CARGO_TARGET_DIR"):
        target_dirs.append(Path(os.environ["CARGO_TARGET_DIR"]))
    for start in (here, Path.cwd().resolve()):
        for parent in (start, *start.parents):
            target_dirs.append(parent / "target")
    for target in target_dirs:
        for profile in ("release", "debug"):
            found += [target / profile / name for name in _NAMES]
    return found


def find_library() -> Path:
    """The first libhaven that exists: HAVEN_LIBRARY, next to the package, the target dir."""
    candidates = _candidates()
    env = os.environ.get("HAVEN_LIBRARY")
    if env and not Path(env).is_file():
        raise ImportError(f"HAVEN_LIBRARY={env} does not exist")
    for path in candidates:
        if path.is_file():
            return path
    raise ImportError(
        "libhaven not found: set HAVEN_LIBRARY, or build it with `cargo build --release --lib`"
    )


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_size, c_u32, c_u64 = ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint64
    ptr, text, data = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p
    buf_p, int_p, size_p = ctypes.POINTER(Buf), ctypes.POINTER(c_int), ctypes.POINTER(c_size)
    handle_out = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "haven_version": ([], text),
        "haven_abi_version": ([], c_u32),
        "haven_code_name": ([c_int], text),
        "haven_last_error": ([], text),
        "haven_test_panic": ([], c_int),
        "haven_buf_free": ([buf_p], None),
        "haven_config_new": ([handle_out], c_int),
        "haven_config_set": ([ptr, text, text], c_int),
        "haven_config_free": ([ptr], None),
        "haven_open": ([ptr, handle_out], c_int),
        "haven_options_init": ([ctypes.POINTER(Options)], c_int),
        "haven_connect": ([text, text, handle_out], c_int),
        "haven_connect_with": ([text, text, ctypes.POINTER(Options), handle_out], c_int),
        "haven_close": ([ptr], None),
        "haven_close_status": ([ptr], c_int),
        "haven_local_addr": ([ptr, buf_p], c_int),
        "haven_put": ([ptr, data, c_size, data, c_size], c_int),
        "haven_get": ([ptr, data, c_size, buf_p, int_p], c_int),
        "haven_get_with": ([ptr, c_int, data, c_size, buf_p, int_p], c_int),
        "haven_delete": ([ptr, data, c_size, int_p], c_int),
        "haven_cas": ([ptr, data, c_size, data, c_size, c_int, data, c_size, int_p], c_int),
        "haven_scan": ([ptr, data, c_size, c_u32, buf_p, size_p, int_p], c_int),
        "haven_range": ([ptr, data, c_size, data, c_size, c_u32, buf_p, size_p, int_p], c_int),
        "haven_record_next": ([buf_p, size_p, ctypes.POINTER(Record)], c_int),
        "haven_status_json": ([ptr, buf_p], c_int),
        "haven_members_json": ([ptr, buf_p], c_int),
        "haven_add_learner": ([ptr, c_u64, text], c_int),
        "haven_promote_learner": ([ptr, c_u64], c_int),
        "haven_remove_member": ([ptr, c_u64], c_int),
        "haven_transfer_leadership": ([ptr, c_u64], c_int),
        "haven_set_log_callback": ([LOG_FN, ptr, c_int], c_int),
        "haven_session_grant": ([ptr, c_u64, handle_out], c_int),
        "haven_session_id": ([ptr, ctypes.POINTER(c_u64)], c_int),
        "haven_session_state": ([ptr, int_p], c_int),
        "haven_session_revoke": ([ptr], c_int),
        "haven_session_free": ([ptr], None),
        "haven_lock": ([ptr, ptr, text, c_int, ctypes.c_int64, ctypes.POINTER(c_u64)], c_int),
        "haven_unlock": ([ptr, ptr, text, c_u64], c_int),
        "haven_check_token": ([ptr, text, c_u64, int_p], c_int),
        "haven_locks_json": ([ptr, buf_p], c_int),
        "haven_owners": (
            [ptr, text, data, c_size, ctypes.POINTER(c_u64), ctypes.POINTER(c_u32), buf_p],
            c_int,
        ),
        "haven_partition_of": (
            [ptr, text, data, c_size, ctypes.POINTER(c_u64), ctypes.POINTER(c_u32)],
            c_int,
        ),
        "haven_map_create": ([ptr, text, c_u32, c_u32], c_int),
        "haven_map_join": ([ptr, text, text, c_u32], c_int),
        "haven_map_leave": ([ptr, text, text], c_int),
        "haven_watch": ([ptr, data, c_size, c_u64, WATCH_FN, ptr, handle_out], c_int),
        "haven_watch_cancel": ([ptr], None),
        "haven_campaign": ([ptr, ptr, text, data, c_size, ctypes.c_int64, ctypes.POINTER(c_u64)], c_int),
        "haven_proclaim": ([ptr, text, c_u64, data, c_size], c_int),
        "haven_resign": ([ptr, text, c_u64], c_int),
        "haven_leader": ([ptr, text, buf_p, ctypes.POINTER(c_u64), ctypes.POINTER(c_u64), int_p], c_int),
        "haven_observe": ([ptr, text, OBSERVE_FN, ptr, handle_out], c_int),
        "haven_observe_cancel": ([ptr], None),
        "haven_txn": ([ptr, ptr, c_size, ptr, c_size, ptr, c_size, int_p, buf_p], c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


def load(path: Optional[Path] = None) -> ctypes.CDLL:
    """Load libhaven, declare its functions and check its ABI version."""
    path = path or find_library()
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    abi = lib.haven_abi_version()
    if abi != ABI_VERSION:
        raise ImportError(
            f"{path} has ABI version {abi}; this haven package needs {ABI_VERSION}"
        )
    return lib
