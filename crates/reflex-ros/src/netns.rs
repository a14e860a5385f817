//! Tests that speak DDS run inside a network namespace of their own that holds only loopback:
//! nothing they send can leave the machine, whatever a DDS stack's defaults are.

use std::process::Command;

/// Runs the test `name` of the current test binary again inside a fresh network namespace
/// (`unshare -n`, loopback up) and asserts that it passed there; returns true. Inside that
/// namespace it checks that loopback is the only interface and returns false: the caller then
/// does the test's work.
pub fn run_test_in_loopback_namespace(name: &str) -> bool {
    if std::env::var_os("REFLEX_IN_NETNS").is_some() {
        // /proc/net/dev lists the interfaces of this process's namespace.
        let ifaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
            .expect("/proc/net/dev")
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
            .collect();
        assert_eq!(
            ifaces,
            vec!["lo".to_string()],
            "the test's network namespace must hold loopback only"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("REFLEX_IN_NETNS", "1")
        .status()
        .expect("unshare (util-linux, as root) runs the DDS tests in a loopback-only namespace");
    assert!(
        status.success(),
        "`{name}` failed inside its network namespace"
    );
    true
}
