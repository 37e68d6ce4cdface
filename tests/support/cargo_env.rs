//! For tests and benches that run a nested cargo (to build the cdylib the C programs link).

use std::process::Command;

/// Remove what cargo sets for running a test of this package (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, `OUT_DIR`, ...) from a nested cargo's environment: build scripts
/// (ring's) declare `rerun-if-env-changed` on those names, so with them set the nested build
/// would run them again and rebuild ring, rustls and haven, where a build from the shell
/// reuses what is there.
pub fn clean_cargo_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo_for_tests = name == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
            || name == "CARGO_TARGET_TMPDIR";
        if set_by_cargo_for_tests {
            command.env_remove(name);
        }
    }
}
