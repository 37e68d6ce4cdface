//! The pure cores stay pure: the Raft core (`src/raft`) and the state machine (`src/sm`) may not
//! reach for the file system, the network, threads, processes or the clock (DESIGN.md, "Pure
//! core, thin shell"; sled, which `src/sm` drives, does its own IO behind its API). Checked on
//! the source text, so a stray `use std::time::Instant` fails the build's tests rather than a
//! code review.

use std::path::Path;

/// Paths and names a pure core must not mention.
const BANNED: [&str; 9] = [
    "std::fs",
    "std::net",
    "std::thread",
    "std::time",
    "std::process",
    "thread_rng",
    "getrandom",
    "SystemTime",
    "Instant",
];

/// Modules of `std` a grouped import (`use std::{fs, io}`) must not name.
const BANNED_IN_GROUPS: [&str; 5] = ["fs", "net", "thread", "time", "process"];

/// The code of `text`: line comments cut, and, with `skip_tests`, everything from the first
/// `#[cfg(test)]` on (test modules sit at the end of a file).
fn code_lines(text: &str, skip_tests: bool) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if skip_tests && line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        lines.push((n + 1, line.split("//").next().unwrap_or("").to_string()));
    }
    lines
}

/// The first segment of every item of every `std::{...}` group in `code` (nested braces too).
fn grouped_std_items(code: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("std::{") {
        let body = &rest[at + "std::{".len()..];
        let (mut depth, mut end) = (1usize, body.len());
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Top-level items only: split on commas outside nested braces.
        let (mut depth, mut start) = (0usize, 0usize);
        let group = &body[..end];
        for (i, c) in group.char_indices().chain([(group.len(), ',')]) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let item = group[start..i].trim();
                    let first = item.split("::").next().unwrap_or("").trim();
                    if !first.is_empty() {
                        items.push(first.to_string());
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    items
}

/// Fails naming file, line and what was found if any `.rs` file of `src/{module}` uses a banned
/// path; returns how many files were checked.
fn check_pure(module: &str, skip_tests: bool) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = code_lines(&text, skip_tests);
        for (n, code) in &lines {
            for banned in BANNED {
                assert!(
                    !code.contains(banned),
                    "{}:{n}: src/{module} must not use {banned}: {code}",
                    path.display(),
                );
            }
        }
        let code: String = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for item in grouped_std_items(&code) {
            assert!(
                !BANNED_IN_GROUPS.contains(&item.as_str()),
                "{}: src/{module} must not use std::{item} (in a grouped import)",
                path.display(),
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn raft_core_imports_no_io_threads_or_clock() {
    let checked = check_pure("raft", false);
    assert!(
        checked >= 8,
        "only {checked} source files found in src/raft"
    );
}

/// The state machine's own unit tests may wait for sled's lazily released lock (a sleep), so
/// its `#[cfg(test)]` modules are not checked; everything the machine runs is.
#[test]
fn state_machine_imports_no_io_threads_or_clock() {
    let checked = check_pure("sm", true);
    assert!(checked >= 10, "only {checked} source files found in src/sm");
}

#[test]
fn grouped_imports_are_seen_through() {
    let items = grouped_std_items("use std::{fs::File, io::{Read, Write}, time};");
    assert_eq!(items, ["fs", "io", "time"]);
    assert!(grouped_std_items("use std::io::Read;").is_empty());
}
