//! `haven bench wal --json` prints exactly one JSON object with the agreed fields. (Only the
//! shape is checked: a benchmark's numbers are never asserted in a test.)

use std::process::Command;

#[test]
fn bench_wal_json_prints_one_object_with_every_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_haven"))
        .args(["bench", "wal", "--json", "--seconds", "0.05", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let json = lines[0];
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    let depth = json.chars().try_fold(0i32, |d, c| {
        let d = d + i32::from(c == '{' || c == '[') - i32::from(c == '}' || c == ']');
        (d >= 0).then_some(d)
    });
    assert_eq!(depth, Some(0), "unbalanced: {json}");
    for batch in [1, 16, 256] {
        assert!(
            json.contains(&format!("\"batch_entries\":{batch},")),
            "{json}"
        );
    }
    let (results, prealloc) = json
        .split_once("\"preallocation_4k_fdatasync\":")
        .expect("the preallocation comparison");
    for file in ["zero-filled", "fallocated", "appending"] {
        assert!(prealloc.contains(&format!("\"file\":\"{file}\"")), "{json}");
    }
    assert_eq!(prealloc.matches("\"p50_ms\":").count(), 3, "{json}");
    for field in [
        "entries_per_sec",
        "p50_ms",
        "p99_ms",
        "floor_p50_ms",
        "floor_p99_ms",
        "ratio_p50_to_floor",
    ] {
        assert_eq!(
            results.matches(&format!("\"{field}\":")).count(),
            3,
            "{field}: {json}"
        );
    }
    // The measurement cleans up after itself.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn version_still_works() {
    let out = Command::new(env!("CARGO_BIN_EXE_haven"))
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("haven {}", env!("CARGO_PKG_VERSION"))
    );
}
