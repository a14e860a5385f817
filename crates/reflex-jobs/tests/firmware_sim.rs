//! The loop closed through the firmware: `reflex run --robot serial:PTY --scene ADDR` against
//! `reflex firmware-sim` (both in this process, talking over a pseudo-terminal and loopback
//! UDP only). The scripted expert picks the cube through the board's controller, the host's
//! judge sees the cube only through the simulated tracker's datagrams, and every episode
//! starts through the scene link's reset.

mod common;

use common::sim_board;

use reflex_jobs::firmware_sim::FirmwareSim;
use reflex_jobs::run::{run, RunRobot, RunSpec};
use reflex_sim::Task;

/// The simulated board for pick_cube, and a scripted session of `seconds` against it from
/// scene `seed`.
fn board_and_session(seconds: f64, seed: u64) -> (FirmwareSim, RunSpec) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let task = Task::load("pick_cube").unwrap();
    let (sim, target) = sim_board(&task);
    let spec = RunSpec {
        task,
        policy: "scripted".into(),
        residual: None,
        residual_scale: None,
        servo_rate_hz: Some(1000.0),
        seconds,
        seed,
        paced: true,
        realtime: false,
        robot: RunRobot::Serial(target),
    };
    (sim, spec)
}

#[test]
fn scripted_pick_cube_through_the_firmware() {
    let (sim, spec) = board_and_session(10.0, 100);
    let r = run(&spec, |_| {}).unwrap();
    // Longer than the board's watchdog: a host that left without a word would trip it.
    common::wait_past_the_board_watchdog();
    let report = sim.stop();
    let ok = r.episodes.iter().filter(|s| **s).count();
    eprintln!(
        "{ok}/{} episodes; board: {:?}, {} host frames, {} lost, {} refused, {} late periods",
        r.episodes.len(),
        report.mode,
        report.stats.frames,
        report.host_frames_lost,
        report.rejects.total(),
        report.late_periods,
    );
    assert!(r.episodes.len() >= 3, "{} episodes", r.episodes.len());
    assert!(
        ok + 1 >= r.episodes.len(),
        "{ok} of {} succeeded",
        r.episodes.len()
    );
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    assert_eq!(report.rejects.total(), 0);
    // The session's end brought the arm to rest and left the board holding, not its
    // watchdog.
    assert_eq!(report.stats.watchdog_trips, 0);
    assert_eq!(report.mode, reflex_fw_core::wire::BoardMode::Holding);
}

/// The board reboots mid-episode: its fresh controller idles the motors (the simulated brakes
/// hold the joints), the host sees its session gone, latches the runtime's e-stop and sends no
/// more setpoints; the arm stays where it was.
#[test]
fn a_board_reboot_mid_run_holds_the_arm() {
    let (sim, spec) = board_and_session(4.0, 7);
    let (r, before, after) = std::thread::scope(|s| {
        let run = s.spawn(|| run(&spec, |_| {}).unwrap());
        // Mid-approach of the first episode.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        sim.reboot();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let before = sim.joint_positions();
        let r = run.join().unwrap();
        (r, before, sim.joint_positions())
    });
    let report = sim.stop();
    assert_eq!(report.reboots, 1);
    assert!(r.estop_pressed, "the host did not notice the reboot");
    assert_eq!(
        report.session, 0,
        "the host must not open a session by itself"
    );
    let moved = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved < 0.01, "the arm moved {moved} rad after the reboot");
    assert_eq!(report.stats.frames, 0, "host frames after the reboot");
}

/// `reflex train --robot serial:PTY --scene ADDR`: the whole training job through the board
/// (demonstrations, behaviour cloning, the base's evaluation, residual learning beside the
/// real-time loop, the final evaluation), its exploring and evaluating runtimes taking turns on
/// the one port. Between episodes the board holds the arm, so the job's pauses (behaviour
/// cloning, plots) never trip its watchdog; at the end it is left holding.
#[test]
fn training_runs_through_the_firmware() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = std::env::temp_dir().join(format!("reflex-fw-train-{}", std::process::id()));
    let (task_path, task) = common::short_pick_cube(&dir);
    let (sim, target) = sim_board(&task);
    let cfg = common::short_train_config(&task_path, 500.0);
    let out = dir.join("run");
    let summary =
        reflex_jobs::serial::serial_train(&cfg, &target, &out, false, None, |_| {}).unwrap();
    // Longer than the board's watchdog.
    common::wait_past_the_board_watchdog();
    let resets = sim.scene.resets.load(std::sync::atomic::Ordering::Relaxed);
    let report = sim.stop();
    eprintln!("{summary:?}\nboard: {report:?}\n{resets} scene resets");

    assert_eq!(summary.stop_reason, "step budget", "{summary:?}");
    assert!(summary.env_steps >= 30, "{summary:?}");
    assert!(summary.updates > 0, "the learner learned: {summary:?}");
    // Two demonstrations, the base's evaluation, two training episodes, the final evaluation:
    // each started through the scene link.
    assert!(resets >= 6, "{resets} scene resets");
    // The base's evaluation and the final one, both judged over the tracked cube (the reach
    // term is positive at any distance).
    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("progress.json")).unwrap()).unwrap();
    let evals = progress["evals"].as_array().unwrap();
    assert_eq!(evals.len(), 2, "{progress}");
    for row in evals {
        let ret = row["mean_return"].as_f64().unwrap();
        assert!(ret > 0.0, "an evaluation's return {ret}: {progress}");
    }
    reflex_jobs::policies::load_for(
        &out.join("policy.safetensors"),
        reflex_policy::Role::Residual,
        &task,
        reflex_jobs::arms::TaskScene::of(&task).unwrap().layout,
    )
    .unwrap();
    // No pause of the job tripped the board's watchdog; the arm is left held at rest.
    assert_eq!(report.stats.watchdog_trips, 0, "{report:?}");
    assert!(report.faults.is_empty(), "{report:?}");
    assert_eq!(report.rejects.total(), 0, "{report:?}");
    assert_eq!(report.mode, reflex_fw_core::wire::BoardMode::Holding);
}

/// The firmware's core in process (`--robot sim-board`): the scripted expert picks the cube
/// through the board's controller at simulation speed, with no setpoint refused (a board that
/// stopped on its own refuses them until the next reset).
#[test]
fn the_in_process_board_runs_the_scripted_expert() {
    let spec = RunSpec {
        task: Task::load("pick_cube").unwrap(),
        policy: "scripted".into(),
        residual: None,
        residual_scale: None,
        servo_rate_hz: Some(500.0),
        seconds: 4.0,
        seed: 300,
        paced: false,
        realtime: false,
        robot: RunRobot::SimBoard(Default::default()),
    };
    let r = run(&spec, |_| {}).unwrap();
    let ok = r.episodes.iter().filter(|s| **s).count();
    eprintln!("{ok}/{} episodes", r.episodes.len());
    assert!(r.episodes.len() >= 4, "{} episodes", r.episodes.len());
    assert!(
        ok * 10 >= r.episodes.len() * 9,
        "{ok} of {} succeeded",
        r.episodes.len()
    );
    let refused = r
        .stats
        .write_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 0, "setpoints refused by the board");
}

/// After a scene reset the board measures the new scene's arm before position control starts
/// again: it starts bumpless from there, not from where the last episode left the arm (which
/// drove the joints at full current toward the old pose and latched an overspeed fault).
#[test]
fn the_in_process_board_starts_bumpless_after_a_scene_reset() {
    use reflex_core::{JointCommand, Robot, RobotState, SceneReset};
    use reflex_jobs::board_sim::{BoardSimRobot, BoardSimSpec};
    let task = Task::load("pick_cube").unwrap();
    let mut robot = BoardSimRobot::new(&task, 1, 500.0, BoardSimSpec::default()).unwrap();
    let limits = task.safety_limits(robot.env().model());
    robot
        .start(&limits, std::time::Duration::from_secs(1))
        .unwrap();
    let mut s = RobotState::default();
    let mut hold_here = |robot: &mut BoardSimRobot, ticks: usize| {
        for _ in 0..ticks {
            robot.read_state(&mut s).unwrap();
            let c = JointCommand {
                joint_pos_rad: s.joint_pos_rad,
                gripper_width_m: s.gripper_width_m,
            };
            robot.write_command(&c).unwrap();
        }
        s.joint_pos_rad
    };
    let first = hold_here(&mut robot, 50);
    // Scenes far enough apart that their start poses differ.
    let mut moved = 0.0f64;
    for seed in 2..6 {
        robot.reset_scene(seed).unwrap();
        let at = hold_here(&mut robot, 300);
        moved = moved.max(
            at.iter()
                .zip(&first)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max),
        );
        assert_eq!(
            robot.board_mode(),
            reflex_fw_core::wire::BoardMode::Position,
            "scene {seed}"
        );
    }
    assert_eq!(robot.board_stops(), 0);
    assert!(
        moved > 0.01,
        "the scenes' start poses differ by {moved} rad only"
    );
}

/// A task that draws its goals per scene (reach): the scene's reset answer carries the new
/// scene's goals, and the host's observations (and so its policy and judge) use them, not the
/// task file's first scene's.
#[test]
fn each_scene_reset_brings_that_scenes_goals() {
    use reflex_core::{Observation, Robot, SafetyLimits, SceneReset};
    let task = Task::load("reach").unwrap();
    let (sim, target) = sim_board(&task);
    let scene = reflex_jobs::arms::TaskScene::of(&task).unwrap();
    let mut robot = target
        .open(
            &task,
            &scene.model,
            &scene.goals,
            reflex_runtime::EStop::new(),
        )
        .unwrap();
    robot
        .start(
            &SafetyLimits::from_model(&scene.model),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    for seed in [11, 12] {
        robot.reset_scene(seed).unwrap();
        let mut obs = Observation::default();
        robot.read_scene(&mut obs);
        let mut env = reflex_sim::Env::new(task.clone()).unwrap();
        env.reset(seed).unwrap();
        let apart = |a: &[[f64; 3]], b: &[[f64; 3]]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        // JSON carries the goals to within a few units in the last place.
        let off = apart(obs.goals(), env.goals());
        assert!(
            off < 1e-9,
            "scene {seed}: {:?} vs {:?}",
            obs.goals(),
            env.goals()
        );
        assert!(
            apart(obs.goals(), &scene.goals) > 0.01,
            "scene {seed}: still the file's first scene's goals"
        );
    }
    robot.stop();
    drop(sim);
}
