//! What the short training tests over a real-time arm share (ROS 2, the firmware).

#![allow(dead_code)]

pub mod ros;

use reflex_jobs::firmware_sim::{FirmwareSim, FirmwareSimSpec};
use reflex_jobs::run::SerialTarget;
use reflex_jobs::train::TrainConfig;
use reflex_sim::Task;
use std::path::{Path, PathBuf};

/// A teleop session on the simulator with the scripted policy at 250 Hz, its page on a free
/// loopback port, recording into `record` with camera frames, each success held for `hold`
/// more policy steps.
pub fn scripted_session(
    task: Task,
    seed: u64,
    record: &Path,
    hold: u32,
) -> reflex_jobs::teleop::TeleopSpec {
    reflex_jobs::teleop::TeleopSpec {
        robot: Default::default(),
        task,
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: None,
        record: Some(record.to_path_buf()),
        record_frames: true,
        success_hold_steps: hold,
    }
}

/// pick_cube with 20-step (2 s) episodes, written into `dir`: its path and the task.
pub fn short_pick_cube(dir: &Path) -> (PathBuf, Task) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(repo.join("sim/tasks/pick_cube.toml")).unwrap();
    assert!(text.contains("episode_steps = 60"));
    let path = dir.join("pick_cube_short.toml");
    std::fs::write(
        &path,
        text.replace("episode_steps = 60", "episode_steps = 20"),
    )
    .unwrap();
    let task = Task::load(path.to_str().unwrap()).unwrap();
    (path, task)
}

/// A training run on the task at `task_path` that stops at its first episode end past 30
/// steps: 2 demonstrations, 1 evaluation episode, a loop at `servo_rate_hz`, and updates from
/// the first online step on the learner thread beside the real-time loop.
pub fn short_train_config(task_path: &Path, servo_rate_hz: f64) -> TrainConfig {
    let mut cfg = TrainConfig {
        task: task_path.display().to_string(),
        demo_episodes: 2,
        max_env_steps: 30,
        eval_episodes: 1,
        heldout_episodes: 0,
        minutes: 2.0,
        ..Default::default()
    };
    cfg.runtime.servo_rate_hz = servo_rate_hz;
    cfg.learner.learning_starts = 1;
    cfg.learner.batch_size = 32;
    cfg
}

/// The simulated board's link watchdog in these tests. The board's watchdog is tested over the
/// pty on its own, in reflex-serial's tests; here a loaded CI machine must not stall the host
/// past it (250 ms tripped twice, with other work on the 2 cores).
pub const SIM_BOARD_WATCHDOG_MS: u16 = 1000;

/// Waits longer than the simulated board's watchdog: a host that left without a word would
/// have tripped it by then.
pub fn wait_past_the_board_watchdog() {
    std::thread::sleep(std::time::Duration::from_millis(
        u64::from(SIM_BOARD_WATCHDOG_MS) + 200,
    ));
}

/// The simulated board for `task` (its watchdog [`SIM_BOARD_WATCHDOG_MS`]), and the serial
/// target that reaches it with its scene link.
pub fn sim_board(task: &Task) -> (FirmwareSim, SerialTarget) {
    let sim = FirmwareSim::start(&FirmwareSimSpec {
        watchdog_ms: SIM_BOARD_WATCHDOG_MS,
        ..FirmwareSimSpec::new(task.clone())
    })
    .unwrap();
    let target = SerialTarget {
        scene: Some(sim.scene_addr),
        ..SerialTarget::new(&sim.device)
    };
    (sim, target)
}

/// A pick_cube run from pixels small enough for a test: 16x16 pictures, [32, 32] networks,
/// batches of 16, no confirmations; the caller sets the budgets.
pub fn small_pixel_config() -> TrainConfig {
    let mut cfg = TrainConfig {
        task: "pick_cube".into(),
        minutes: 3.0,
        confirm_episodes: 0,
        obs: reflex_jobs::train::config::ObsMode::Pixels,
        ..TrainConfig::default()
    };
    cfg.pixels.side = 16;
    cfg.pixels.sac.shift_pad = 2;
    cfg.bc.hidden = vec![32, 32];
    cfg.agent.hidden = vec![32, 32];
    cfg.learner.batch_size = 16;
    cfg
}
