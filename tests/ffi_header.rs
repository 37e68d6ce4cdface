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
        "haven_session_grant",
        "haven_lock",
        "haven_unlock",
        "haven_check_token",
        "haven_owners",
        "haven_watch",
        "haven_watch_cancel",
        "HAVEN_ERR_LOCK_NOT_HELD",
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

/// The lines of `text` strictly between the line holding `README:begin` and the one holding
/// `README:end`, with their common indentation removed.
fn marked_region(text: &str, path: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.contains("README:begin"))
        .unwrap_or_else(|| panic!("{path}: no README:begin marker"));
    let end = lines
        .iter()
        .position(|l| l.contains("README:end"))
        .unwrap_or_else(|| panic!("{path}: no README:end marker"));
    assert!(begin < end, "{path}: README:end before README:begin");
    let region = &lines[begin + 1..end];
    let indent = region
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    region
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The README's C, C++ and Python examples are the marked parts of programs the binding tests
/// build and run (`<!-- snippet: PATH -->` before each code block), so they cannot go stale.
/// (The Rust example is a doctest: the README is the crate's documentation.)
#[test]
fn readme_snippets_are_the_code_the_tests_run() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- snippet: ") {
        let after = &rest[at + "<!-- snippet: ".len()..];
        let path = after[..after.find(" -->").expect("snippet marker closed")].trim();
        let fence = after
            .find("```")
            .expect("a code block after the snippet marker");
        let body = &after[fence..];
        let body = &body[body.find('\n').expect("fence line") + 1..];
        let close = body.find("\n```").expect("the code block is closed");
        let shown = body[..close].trim_end();
        let source = std::fs::read_to_string(root().join(path))
            .unwrap_or_else(|e| panic!("README snippet names {path}: {e}"));
        let expected = marked_region(&source, path);
        assert!(
            shown == expected,
            "README's snippet of {path} differs from its README:begin..README:end region.\n\
             README:\n{shown}\n\n{path}:\n{expected}"
        );
        checked.push(path.to_string());
        rest = &body[close..];
    }
    assert_eq!(
        checked,
        [
            "bindings/c/example.c",
            "bindings/cpp/test_haven.cpp",
            "bindings/python/tests/test_readme.py"
        ],
        "the README's binding examples"
    );
}
