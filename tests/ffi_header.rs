//! include/haven.h is generated from src/ffi: regenerate it and fail when the committed one is
//! stale; then prove it compiles as strict C99 and as C++17.
//!
//! After changing src/ffi: `HAVEN_BLESS_HEADER=1 cargo test --release --test ffi_header`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate() -> String {
    let root = root();
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_matches_the_code() {
    let generated = generate();
    let path = root().join("include/haven.h");
    if std::env::var_os("HAVEN_BLESS_HEADER").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/haven.h is stale: run `HAVEN_BLESS_HEADER=1 cargo test --release --test \
         ffi_header` and commit the header"
    );
    for name in [
        "haven_connect",
        "haven_open",
        "haven_put",
        "haven_get",
        "haven_cas",
        "HAVEN_ERR_INTERNAL",
        "haven_set_log_callback",
    ] {
        assert!(generated.contains(name), "{name} missing from the header");
    }
}

fn compile(compiler: &str, args: &[&str], source: &str, dir: &Path) {
    let file = dir.join(if compiler == "gcc" { "t.c" } else { "t.cpp" });
    std::fs::write(&file, source).unwrap();
    let include = root().join("include");
    let output = Command::new(compiler)
        .args(args)
        .arg("-I")
        .arg(&include)
        .arg("-c")
        .arg(&file)
        .arg("-o")
        .arg(dir.join("t.o"))
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} {args:?} rejected include/haven.h:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn header_compiles_as_strict_c99_and_cpp17() {
    let dir = tempfile::tempdir().unwrap();
    let source = "#include \"haven.h\"\n\
                  int main(void) {\n\
                  \x20   haven_buf_t buf = {NULL, 0};\n\
                  \x20   haven_buf_free(&buf);\n\
                  \x20   return HAVEN_VERSION_MAJOR + HAVEN_OK + (haven_abi_version() != HAVEN_ABI_VERSION);\n\
                  }\n";
    compile(
        "gcc",
        &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        source,
        dir.path(),
    );
    compile(
        "g++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        source,
        dir.path(),
    );
}
