//! The Raft core stays pure: it may not reach for the file system, the network, threads or
//! the clock (DESIGN.md, "Pure core, thin shell"). Checked on the source text, so a stray
//! `use std::time::Instant` fails the build's tests rather than a code review.

use std::path::Path;

#[test]
fn raft_core_imports_no_io_threads_or_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in [
                "std::fs",
                "std::net",
                "std::thread",
                "std::time",
                "thread_rng",
                "getrandom",
                "SystemTime",
                "Instant",
            ] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: the Raft core must not use {banned}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} source files found in {}",
        dir.display()
    );
}
