//! The teleop page in a real browser: headless Chromium (Debian's) driven by Playwright (PyPI's),
//! `tests/interop/teleop_page.py`, against a correction session on the simulated arm. The page is
//! refused without its token; it shows the front and wrist cameras' views; a scripted gamepad (a shim: headless Chromium has none) held on a
//! shoulder button lifts the tool and letting go hands back; Space with F lowers it; the e-stop
//! button latches the runtime's e-stop. The page's screenshot is kept in
//! `target/teleop-page.png`.

use reflex_jobs::teleop::{TeleopSession, TeleopSpec};
use reflex_sim::Task;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

#[test]
fn the_page_in_chromium_takes_over_with_a_gamepad_and_keys_and_stops_the_arm() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join("target/pyenv/bin/python");
    assert!(
        Path::new("/usr/bin/chromium").exists() && python.exists(),
        "needs Debian's chromium and target/pyenv with playwright: run scripts/test.sh"
    );
    let session = TeleopSession::start(&TeleopSpec {
        robot: Default::default(),
        task: Task::load("pick_cube").unwrap(),
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed: 21,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: None,
        record: None,
        record_frames: false,
        success_hold_steps: 0,
    })
    .unwrap();
    let shot = repo.join("target/teleop-page.png");
    let out = Command::new(&python)
        .arg(repo.join("tests/interop/teleop_page.py"))
        .arg(session.url())
        .arg(&shot)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser script failed: {stderr}");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {stderr}"))
        .to_owned();
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    println!("page report: {r}");
    assert_eq!(r["without_token"], 401);
    assert_eq!(r["wrong_token"], 401);
    assert_eq!(r["with_token"], 200);
    assert_eq!(r["task"], "pick_cube");
    assert_eq!(
        r["learning_hidden"], true,
        "no learner, no learning section"
    );
    assert_eq!(r["front_view_px"], 160, "the front camera's view is shown");
    assert_eq!(r["wrist_view_px"], 160, "the wrist camera's view is shown");
    assert_eq!(r["pad_driving"], true);
    assert_eq!(r["pad_released"], true);
    assert!(r["pad_lift_m"].as_f64().unwrap() > 0.05, "{r}");
    assert_eq!(r["keys_driving"], true);
    assert!(r["keys_lift_m"].as_f64().unwrap() < -0.05, "{r}");
    assert_eq!(r["estop_latched"], true);
    assert!(
        session.estop().is_latched(),
        "the page's button is the runtime's e-stop"
    );
    assert!(shot.exists());
    let stats = session.stats().clone();
    let report = session.run_until(|_| true).unwrap();
    assert!(report.intervened_steps >= 10, "{report:?}");
    assert_eq!(report.estops, 1);
    assert!(stats.intervened_steps.load(Ordering::Relaxed) >= 10);
}
