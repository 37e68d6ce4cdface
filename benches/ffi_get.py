"""benches/ffi.rs: Db.get(stale=True) of one key through Python ctypes, ops/s.
Usage: python3 ffi_get.py DATA_DIR PORT SECONDS (with bindings/python on PYTHONPATH)."""

import sys
import time

import haven

data_dir, port, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
address = f"127.0.0.1:{port}"
db = haven.open(id=1, listen=address, peers={1: address}, data_dir=data_dir, secret="sixteen or more bytes of secret")
value = b"v" * 100
db.put(b"bench/key", value)
ops, start = 0, time.monotonic()
while True:
    for _ in range(1000):
        if db.get(b"bench/key", stale=True) != value:
            sys.exit("wrong value")
    ops += 1000
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
print(f"{ops / elapsed:.0f}")
db.close()
