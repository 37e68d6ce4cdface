//! The cost of the C boundary: one key read with a stale (local) read, so the network and
//! the quorum do not hide it, through
//! - Rust `Client::get` (the baseline),
//! - the C ABI called from Rust (`haven_get_with`: argument checks, panic guard, buffer),
//! - a C program linked against libhaven.so (`benches/ffi_get.c`, gcc -O2),
//! - Python ctypes (`benches/ffi_get.py` over bindings/python).
//!
//! Each opens its own single-member cluster and reads a 100-byte value in a loop for
//! `HAVEN_BENCH_SECS` seconds (default 3); the four run in turn (each round starting with the
//! next one) `HAVEN_BENCH_ROUNDS` times (default 3) and each reports its median. A stale get
//! is a hand-off to the member's thread and back (tens of microseconds on a busy machine),
//! so the boundary's own cost (nanoseconds for C; a few microseconds for ctypes) is within
//! the rounds' spread. Run: `cargo bench --bench ffi`. Prints ops/s per path, the rounds, and
//! one JSON line. Needs gcc and python3 (a path whose tool is missing is skipped).

#[path = "../tests/support/cargo_env.rs"]
mod cargo_env;

use cargo_env::clean_cargo_env;
use haven::ffi::{
    haven_buf_free, haven_buf_t, haven_get_with, haven_t, HAVEN_OK, HAVEN_READ_STALE,
};
use haven::net::ClusterSecret;
use haven::{ClientOptions, ClusterId, Config, Node, NodeId, ReadMode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const KEY: &[u8] = b"bench/key";
const SECRET: &[u8] = b"sixteen or more bytes of secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    haven::net::free_loopback_addrs(1).expect("a free port")[0].port()
}

fn open_member(dir: &Path) -> Node {
    let listen = format!("127.0.0.1:{}", free_port());
    let members = [(NodeId(1), listen.clone())].into();
    let secret = ClusterSecret::new(SECRET.to_vec()).unwrap();
    let config = Config::new(
        NodeId(1),
        ClusterId(1),
        dir,
        listen.parse().unwrap(),
        members,
        secret,
    );
    let node = Node::open(config).expect("open the member");
    node.client().put(KEY, &[b'v'; 100]).expect("put");
    node
}

/// Run `read` in batches of 1000 for `seconds`; ops/s.
fn measure(seconds: f64, mut read: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        for _ in 0..1000 {
            read();
        }
        ops += 1000;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds {
            return ops as f64 / elapsed;
        }
    }
}

fn rust_client(seconds: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let node = open_member(dir.path());
    let client = node.client_with(ClientOptions {
        read_mode: ReadMode::Stale,
        ..ClientOptions::default()
    });
    let ops = measure(seconds, || {
        let got = client.get(KEY).expect("get").expect("present");
        assert_eq!(got.value.len(), 100);
    });
    node.shutdown().unwrap();
    ops
}

fn c_abi_from_rust(seconds: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = std::ptr::null_mut();
    assert_eq!(haven::ffi::haven_config_new(&mut cfg), HAVEN_OK);
    let listen = format!("127.0.0.1:{port}\0");
    let peers = format!("1=127.0.0.1:{port}\0");
    let data_dir = format!("{}\0", dir.path().display());
    for (key, value) in [
        ("id\0", "1\0"),
        ("listen\0", listen.as_str()),
        ("peers\0", peers.as_str()),
        ("data_dir\0", data_dir.as_str()),
        ("secret\0", "sixteen or more bytes of secret\0"),
    ] {
        let rc = haven::ffi::haven_config_set(cfg, key.as_ptr().cast(), value.as_ptr().cast());
        assert_eq!(rc, HAVEN_OK, "{key}");
    }
    let mut h: *mut haven_t = std::ptr::null_mut();
    assert_eq!(haven::ffi::haven_open(cfg, &mut h), HAVEN_OK);
    haven::ffi::haven_config_free(cfg);
    let value = [b'v'; 100];
    assert_eq!(
        haven::ffi::haven_put(h, KEY.as_ptr(), KEY.len(), value.as_ptr(), value.len()),
        HAVEN_OK
    );
    let ops = measure(seconds, || {
        let mut buf = haven_buf_t {
            data: std::ptr::null_mut(),
            len: 0,
        };
        let mut found = 0;
        let rc = haven_get_with(
            h,
            HAVEN_READ_STALE,
            KEY.as_ptr(),
            KEY.len(),
            &mut buf,
            &mut found,
        );
        assert!(rc == HAVEN_OK && found == 1 && buf.len == 100);
        haven_buf_free(&mut buf);
    });
    haven::ffi::haven_close(h);
    ops
}

fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        // `--bench ffi`: resolve features as this bench's build did (dev-dependencies
        // included), so the library is not built a second time with other features.
        .args([
            "build",
            "--release",
            "--lib",
            "--bench",
            "ffi",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.parent().unwrap());
    clean_cargo_env(&mut command);
    let status = command.status().expect("cargo build --lib");
    assert!(status.success());
    dir
}

fn run_ops(command: &mut Command, what: &str) -> Option<f64> {
    let output = match command.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{what}: skipped ({e})");
            return None;
        }
    };
    if !output.status.success() {
        eprintln!(
            "{what}: failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn c_program(seconds: f64, lib: &Path) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ffi_get");
    let built = Command::new("gcc")
        .args(["-std=c99", "-O2", "-I"])
        .arg(root().join("include"))
        .arg(root().join("benches/ffi_get.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lhaven")
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!("c: skipped (gcc failed or missing)");
        return None;
    }
    let soname = lib.join("libhaven.so.0");
    if std::fs::symlink_metadata(&soname).is_err() {
        let _ = std::os::unix::fs::symlink("libhaven.so", &soname);
    }
    run_ops(
        Command::new(&exe)
            .arg(dir.path().join("data"))
            .arg(free_port().to_string())
            .arg(seconds.to_string()),
        "c",
    )
}

fn python(seconds: f64, lib: &Path) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    run_ops(
        Command::new("python3")
            .arg(root().join("benches/ffi_get.py"))
            .arg(dir.path().join("data"))
            .arg(free_port().to_string())
            .arg(seconds.to_string())
            .env("PYTHONPATH", root().join("bindings/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HAVEN_LIBRARY", lib.join("libhaven.so")),
        "python",
    )
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter.
    let seconds: f64 = std::env::var("HAVEN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // The paths run in turn, `rounds` times, and each reports its median: a machine shared
    // with other work slows all of them alike instead of one.
    let rounds: usize = std::env::var("HAVEN_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let lib = library_dir();
    let (mut rust, mut abi, mut c, mut py) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Each round starts with the next path, so no path always runs first (or right after
        // another's teardown).
        for path in (0..4).map(|i| (i + round) % 4) {
            match path {
                0 => rust.push(rust_client(seconds)),
                1 => abi.push(c_abi_from_rust(seconds)),
                2 => c.extend(c_program(seconds, &lib)),
                _ => py.extend(python(seconds, &lib)),
            }
        }
    }
    let each = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "rounds (ops/s): rust [{}] abi [{}] c [{}] python [{}]",
        each(&rust),
        each(&abi),
        each(&c),
        each(&py)
    );
    let rust = median(rust).expect("at least one round");
    let abi = median(abi).expect("at least one round");
    let (c, py) = (median(c), median(py));
    let pct = |x: f64| format!("{:.1}%", 100.0 * x / rust);
    println!("stale get of one 100-byte value, ops/s (median of {rounds} x {seconds} s):");
    println!("  rust Client::get          {rust:>12.0}");
    println!("  C ABI from rust           {abi:>12.0}  {}", pct(abi));
    if let Some(c) = c {
        println!("  C program (gcc -O2)       {c:>12.0}  {}", pct(c));
    }
    if let Some(py) = py {
        println!("  python ctypes             {py:>12.0}  {}", pct(py));
    }
    let json = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.0}"));
    let ratio = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{:.3}", v / rust));
    println!(
        "{{\"rust_ops_per_sec\":{rust:.0},\"c_abi_ops_per_sec\":{abi:.0},\"c_ops_per_sec\":{},\"python_ops_per_sec\":{},\"c_to_rust\":{},\"python_to_rust\":{}}}",
        json(c),
        json(py),
        ratio(c),
        ratio(py)
    );
}
