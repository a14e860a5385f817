//! What the interop tests share: the Python with the reference libraries, and running one of
//! `tests/interop`'s scripts on a weights file and a spec.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python environment `scripts/test.sh` installs the reference libraries into.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh",
        venv.display()
    );
    venv
}

/// Runs `tests/interop/<script>` in `mode` on a weights file and a spec; returns its JSON report.
pub fn run_script(script: &str, mode: &str, weights: &Path, spec: &Path) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .arg(mode)
        .arg(weights)
        .arg(spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
