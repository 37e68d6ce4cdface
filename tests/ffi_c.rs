//! The C and C++ bindings: bindings/c/test_haven.c built with gcc against the cdylib and run under
//! valgrind (no leaks, no invalid reads), and bindings/c/example.c (a 3-member cluster in one
//! process) built and run, and bindings/cpp/test_haven.cpp (the RAII header) built with
//! `g++ -std=c++17 -Wall -Werror` and run.

#[path = "support/cargo_env.rs"]
mod cargo_env;

use cargo_env::clean_cargo_env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding libhaven.so of this build profile (target/<profile>), built now:
/// `cargo test` builds the library only as an rlib for the test binaries, so the cdylib the C
/// programs link against is built here (a no-op when it is up to date). `--test ffi_c` makes
/// this build resolve features as `cargo test` did (dev-dependencies included), so it reuses
/// the test build's dependencies instead of building the library and its dependencies again.
pub fn library_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            // target/<profile>/deps/ffi_c-HASH -> target/<profile>
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            let target_dir = dir.parent().expect("target dir");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = Command::new(cargo);
            command
                .args(["build", "--lib", "--test", "ffi_c", "--manifest-path"])
                .arg(root().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir);
            if dir.ends_with("release") {
                command.arg("--release");
            }
            clean_cargo_env(&mut command);
            let status = command.status().expect("running cargo build --lib");
            assert!(status.success(), "cargo build --lib failed");
            assert!(
                dir.join("libhaven.so").exists(),
                "no libhaven.so in {}",
                dir.display()
            );
            // The SONAME is libhaven.so.<major>: programs linked against the library look
            // for that name, as after an install (`ln -s libhaven.so libhaven.so.0`).
            let soname = dir.join(format!("libhaven.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
            if std::fs::symlink_metadata(&soname).is_err() {
                std::os::unix::fs::symlink("libhaven.so", &soname).expect("soname link");
            }
            dir.to_path_buf()
        })
        .clone()
}

fn build(source: &str, out: &Path) {
    let lib = library_dir();
    let mut command = if source.ends_with(".cpp") {
        let mut gxx = Command::new("g++");
        gxx.args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
            .arg("-I")
            .arg(root().join("bindings/cpp"));
        gxx
    } else {
        let mut gcc = Command::new("gcc");
        gcc.args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-g",
            "-O1",
        ]);
        gcc
    };
    let output = command
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(source))
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lhaven", "-lpthread"])
        .output()
        .expect("running the compiler");
    assert!(
        output.status.success(),
        "gcc {source}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(mut command: Command, what: &str) -> String {
    let output = command
        .env("HAVEN_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn c_test_program_passes_under_valgrind() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_haven");
    build("bindings/c/test_haven.c", &exe);
    let mut command = Command::new("valgrind");
    command
        .args([
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--quiet",
        ])
        .arg(format!(
            "--suppressions={}",
            root().join("bindings/c/valgrind.supp").display()
        ))
        .arg(&exe);
    let stdout = run(command, "valgrind test_haven");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn c_example_runs_a_three_member_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("example");
    build("bindings/c/example.c", &exe);
    let stdout = run(Command::new(&exe), "example");
    assert!(stdout.contains("get: fast"), "{stdout}");
    assert!(stdout.contains("cas fast->safe: swapped"), "{stdout}");
    assert!(stdout.contains("lock backup: token "), "{stdout}");
    assert!(stdout.contains("leader: 10.0.0.8"), "{stdout}");
}

#[test]
fn cpp_binding_test_passes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_haven_cpp");
    build("bindings/cpp/test_haven.cpp", &exe);
    let stdout = run(Command::new(&exe), "test_haven_cpp");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
