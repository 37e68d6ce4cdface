//! `haven demo` end to end: it must exit 0, tell each step, report a failover time, leave no
//! directory behind and no child running.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::haven_in;
use std::time::Duration;

fn run_demo(args: &[&str]) -> cli_support::Run {
    // Under the target directory: on the real filesystem, like the demo's default.
    let cwd = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let run = haven_in(cwd.path(), args, None, Duration::from_secs(180));
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the demo left files behind: {left:?}; {run:?}"
    );
    run
}

fn assert_story(run: &cli_support::Run, keys: usize) {
    assert_eq!(run.code, 0, "{run:?}");
    let out = &run.stdout;
    for step in [
        "\n1. ", "\n2. ", "\n3. ", "\n4. ", "\n5. ", "\n6. ", "\n7. ",
    ] {
        assert!(out.contains(step), "step {step:?} missing: {out}");
    }
    assert!(out.contains(&format!("wrote {keys} keys")), "{out}");
    assert!(out.contains(&format!("Read back all {keys} keys")), "{out}");
    let failover_ms: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("failover time: "))
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no failover time: {out}"));
    assert!(failover_ms > 0.0);
    assert!(out.contains("hold identical state"), "{out}");
    assert!(out.contains("3 of 3 members reachable"), "{out}");
    assert!(
        run.stderr.contains(&format!("{keys}/{keys}")),
        "progress shown: {run:?}"
    );
    // Every child it started (it prints their pids) is gone: killed and reaped.
    let pids: Vec<&str> = out
        .match_indices("(pid ")
        .filter_map(|(i, _)| out[i + 5..].split(')').next())
        .collect();
    assert!(pids.len() >= 3, "{out}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} outlived the demo"
        );
    }
}

#[test]
fn demo_with_fewer_keys_runs_end_to_end() {
    let run = run_demo(&["demo", "--keys", "500"]);
    assert_story(&run, 500);
}

#[test]
fn demo_with_no_arguments_runs_end_to_end() {
    let run = run_demo(&["demo"]);
    assert_story(&run, 10_000);
}

#[test]
fn demo_refuses_a_member_count_it_does_not_support() {
    let run = run_demo(&["demo", "--members", "4"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr_lines().len(), 1, "{run:?}");
}
