//! Interop with a real ROS 2 peer: an rclpy arm driver (`tests/interop/ros_arm_driver.py`,
//! Fast DDS from PyPI) plays a ros2_control arm, and the bridge closes the loop through it with
//! a policy that pushes at every limit. The driver checks every command from its side and injects
//! faults: e-stop press and release, a re-arm service call, NaN states, wrong joint names, wrong
//! lengths, out-of-order stamps, bursts and silence; then an operator's twist takes over. A second bridge then starts under the same
//! running driver.
//!
//! The same loop closes through an arm driver on Eclipse Cyclone DDS (`cyclone_arm.py`, PyPI's
//! `cyclonedds`, no ROS), which speaks the ROS 2 wire types by their DDS names.
//!
//! `scripts/test-r2r.sh` runs these tests again over the bridge's r2r backend
//! (`REFLEX_ROS_BACKEND=r2r`).
//!
//! Each test re-runs itself inside a new network namespace (`unshare -n`) that has only
//! loopback, and asserts that: no DDS packet can leave the machine.

use reflex_core::{Action, Observation, Policy};
use reflex_jobs::arms::runtime_config;
use reflex_jobs::ros::scene_spec;
use reflex_ros::{BridgeParams, Reader, RosArgs, RosRobot};
use reflex_runtime::{EStop, Runtime, RuntimeSettings};
use reflex_sim::Task;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const DOMAIN: u32 = 71;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = repo().join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh",
        venv.display()
    );
    venv
}

/// A bridge for `task` with `params` obeying `estop`, its arm model, and the runtime
/// configuration for a loop at `rate_hz` (20 s to wait for the driver's first state).
fn connect(
    task: &Task,
    params: &BridgeParams,
    estop: EStop,
    rate_hz: f64,
) -> (
    RosRobot,
    reflex_core::ArmModel,
    reflex_runtime::RuntimeConfig,
) {
    let robot = RosRobot::connect(params, "reflex", "/", scene_spec(task, &[]), estop).unwrap();
    let model = robot.model().clone();
    let cfg = runtime_config(
        task,
        &model,
        rate_hz,
        &RuntimeSettings {
            start_timeout_s: 20.0,
            ..Default::default()
        },
    );
    (robot, model, cfg)
}

/// Starts `tests/interop/<script>` with its JSON configuration on DDS domain `domain` (the
/// scripts restrict themselves to loopback; Fast DDS is chosen for rclpy).
fn spawn_driver(script: &str, cfg: &serde_json::Value, domain: u32) -> std::process::Child {
    Command::new(python())
        .arg(repo().join("tests/interop").join(script))
        .arg(cfg.to_string())
        .env("ROS_DOMAIN_ID", domain.to_string())
        .env("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a driver and parses the JSON report it prints last.
fn driver_report(driver: std::process::Child, what: &str) -> serde_json::Value {
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "the {what} failed");
    let line = out
        .stdout
        .split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"{"))
        .unwrap_or_else(|| panic!("the {what} printed no report"));
    serde_json::from_slice(line).unwrap()
}

/// Drives the arm behind `robot` with [`Wild`] until `until_s` after `started` (the driver's
/// clock started a little before), brings it to rest, and returns the bridge's counters and the
/// report of `driver` (`what` names it).
fn drive_wild(
    robot: RosRobot,
    model: reflex_core::ArmModel,
    cfg: reflex_runtime::RuntimeConfig,
    driver: std::process::Child,
    started: std::time::Instant,
    until_s: u64,
    what: &str,
) -> (std::sync::Arc<reflex_ros::BridgeStats>, serde_json::Value) {
    let mut rt = Runtime::new(
        robot,
        cfg,
        model,
        Box::new(Wild { step: 0 }),
        None,
        EStop::new(),
    )
    .unwrap_or_else(|e| panic!("the bridge starts on the {what}'s first joint state: {e}"));
    let left = Duration::from_secs(until_s).saturating_sub(started.elapsed());
    rt.run(left, true, |_, _| true);
    assert!(rt.shutdown(2000, true), "the arm came to rest");
    let b = rt.robot().stats().clone();
    drop(rt);
    let report = driver_report(driver, what);
    println!("{what} report: {report}");
    (b, report)
}

/// A policy that pushes every component to its extreme, switching sign every few steps.
struct Wild {
    step: u64,
}

impl Policy for Wild {
    fn act(&mut self, _obs: &Observation, action: &mut Action) {
        self.step += 1;
        for (i, a) in action.as_mut_slice().iter_mut().enumerate() {
            *a = if (self.step / 3 + i as u64).is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
        }
    }
}

/// The backend under test: none (the default) or, from scripts/test-r2r.sh, `r2r`, whose rcl
/// takes the domain from the environment like every rcl node (each test runs in a process of
/// its own).
fn backend_args(domain: u32) -> Vec<String> {
    match std::env::var("REFLEX_ROS_BACKEND") {
        Ok(backend) => {
            std::env::set_var("ROS_DOMAIN_ID", domain.to_string());
            vec!["-p".into(), format!("backend:={backend}")]
        }
        Err(_) => Vec::new(),
    }
}

fn bridge_params(domain: u32) -> BridgeParams {
    bridge_params_with(domain, &[])
}

fn bridge_params_with(domain: u32, extra: &[&str]) -> BridgeParams {
    let urdf = repo().join("urdf/reflex_arm.urdf");
    let mut argv = vec![
        "-p".to_string(),
        format!("domain_id:={domain}"),
        "-p".into(),
        format!("urdf:={}", urdf.display()),
        "-p".into(),
        "base_link:=link0".into(),
        "-p".into(),
        "state_timeout_s:=0.05".into(),
        "-p".into(),
        "diagnostics_period_s:=0.5".into(),
    ];
    for e in extra {
        argv.push("-p".into());
        argv.push(e.to_string());
    }
    argv.extend(backend_args(domain));
    let args = RosArgs::parse(&argv).unwrap();
    let mut r = Reader::new(args.parameters("/reflex").unwrap());
    let p = BridgeParams::read(&mut r).unwrap();
    r.finish().unwrap();
    p
}

#[test]
fn an_rclpy_arm_driver_closes_the_loop_through_the_bridge_and_every_fault_ends_in_a_hold() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "an_rclpy_arm_driver_closes_the_loop_through_the_bridge_and_every_fault_ends_in_a_hold",
    ) {
        return;
    }
    let task = Task::load("pick_cube").unwrap();
    let params = bridge_params(DOMAIN);
    let rate = 200.0;
    let estop = EStop::new();
    let (robot, model, cfg) = connect(&task, &params, estop.clone(), rate);
    let l = cfg.limits.clone();
    let brake_rad = (0..7)
        .map(|j| l.joint_vel_max_rad_s[j].powi(2) / (2.0 * l.joint_acc_max_rad_s2[j]))
        .fold(0.0, f64::max);
    let driver_cfg = serde_json::json!({
        "joint_names": model.joint_names,
        "finger_names": model.gripper.as_ref().unwrap().finger_joints,
        "joint_pos_min_rad": l.joint_pos_min_rad,
        "joint_pos_max_rad": l.joint_pos_max_rad,
        "joint_vel_max_rad_s": l.joint_vel_max_rad_s,
        "initial_joint_pos_rad": task.arm.initial_joint_pos_rad,
        "initial_gripper_width_m": 0.08,
        "servo_period_s": 1.0 / rate,
        "rate_hz": 250.0,
        "seconds": 17.0,
        "schedule": [
            [5.0, 6.0, "estop"],
            [6.5, 7.5, "rearm"],
            [8.0, 8.3, "nan"],
            [8.6, 8.9, "wrong_names"],
            [9.2, 9.5, "bad_length"],
            [9.8, 10.1, "out_of_order"],
            [10.4, 10.9, "silence"],
            [11.2, 11.4, "burst"],
            [11.6, 12.6, "twist"],
        ],
    });
    let driver = spawn_driver("ros_arm_driver.py", &driver_cfg, DOMAIN);
    let started = std::time::Instant::now();

    // The task judges every step (no tracker here: the cube sits at the origin); each
    // judgement goes out on /reflex/reward.
    let mut robot = robot;
    robot.set_judge(Box::new(reflex_sim::TaskJudge::new(&task)));
    let mut rt = Runtime::new(
        robot,
        cfg.clone(),
        model.clone(),
        Box::new(Wild { step: 0 }),
        None,
        estop.clone(),
    )
    .expect("the bridge starts on the driver's first joint state");
    rt.robot().attach_runtime_stats(rt.stats().clone());
    rt.robot().attach_operator(
        rt.operator().clone(),
        reflex_jobs::ros::operator_mapper(&task, &params),
    );
    // Until the driver's schedule is over (its clock started a little before ours).
    let left = Duration::from_secs(13).saturating_sub(started.elapsed());
    rt.run(left, true, |_, _| true);
    assert!(rt.shutdown(2000, true), "the arm came to rest at the end");
    let b = rt.robot().stats().clone();
    let stats = rt.stats().clone();
    drop(rt);

    // A second bridge under the same running driver: it starts and commands again.
    let robot =
        RosRobot::connect(&params, "reflex", "/", scene_spec(&task, &[]), EStop::new()).unwrap();
    let mut rt2 = Runtime::new(
        robot,
        cfg,
        model,
        Box::new(Wild { step: 0 }),
        None,
        EStop::new(),
    )
    .expect("a restarted bridge picks up the running driver");
    rt2.run(Duration::from_secs(2), true, |_, _| true);
    let second_commands = rt2.robot().stats().commands.load(Ordering::Relaxed);
    assert!(rt2.shutdown(2000, true));
    drop(rt2);

    let report = driver_report(driver, "rclpy driver");
    println!("driver report: {report}");
    let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "bridge: states {} non-finite {} missing-joint {} bad-length {} out-of-order {} superseded {} stale {} commands {}",
        ld(&b.states),
        ld(&b.states_non_finite),
        ld(&b.states_missing_joint),
        ld(&b.states_bad_length),
        ld(&b.states_out_of_order),
        ld(&b.states_superseded),
        ld(&b.stale_reads),
        ld(&b.commands)
    );

    // rclpy's side: every command well-formed, inside the limits, no faster than allowed.
    let n = |k: &str| report[k].as_f64().unwrap();
    assert!(n("commands") > 1000.0, "{report}");
    for k in [
        "bad_length",
        "non_finite",
        "outside_limits",
        "too_fast",
        "layout_not_empty",
    ] {
        assert_eq!(n(k), 0.0, "{k}: {report}");
    }
    assert_eq!(report["publisher_type"], "std_msgs/msg/Float64MultiArray");
    assert!(
        report["publisher_qos"]
            .as_str()
            .unwrap()
            .contains("RELIABLE"),
        "{report}"
    );
    assert!(n("gripper_commands") > 100.0, "{report}");
    assert!(n("diagnostics") >= 3.0, "{report}");
    let keys = report["diagnostic_keys"].to_string();
    for k in [
        "joint_states_missing_joint",
        "deadline_misses",
        "stale_reads",
    ] {
        assert!(keys.contains(k), "/diagnostics lacks {k}: {keys}");
    }
    // The e-stop topic braked the arm (within its braking distance) and the re-arm service
    // answered from the driver's side.
    assert!(estop.presses() >= 1 && estop.rearms() >= 1);
    assert!(ld(&stats.estop_aborts) >= 1);
    assert!(
        n("moved_during_estop_rad") <= brake_rad + 0.05,
        "moved {} rad after the e-stop (braking distance {brake_rad})",
        n("moved_during_estop_rad")
    );
    assert_eq!(report["rearm"]["success"], true, "{report}");
    // Every judged step reached rclpy, named, with finite values; the second bridge has no
    // judge, so its steps say their reward is pending (NaN).
    assert_eq!(n("reward_malformed"), 0.0, "{report}");
    assert!(n("rewards_judged") >= 50.0, "{report}");
    assert!(n("rewards_pending") >= 5.0, "{report}");
    let labels = report["reward_labels"].to_string();
    assert!(
        labels.contains("\"step,reward,success,terminated,truncated,reach,lift,success\""),
        "{labels}"
    );
    assert!(ld(&b.rewards_published) as f64 >= n("rewards_judged"));
    assert_eq!(ld(&b.rewards_dropped), 0);
    // Every injected fault was refused and counted on the bridge's side.
    assert!(ld(&b.states_non_finite) > 0);
    assert!(ld(&b.states_missing_joint) > 0);
    assert!(ld(&b.states_bad_length) > 0);
    assert!(ld(&b.states_out_of_order) > 0);
    assert!(ld(&b.stale_reads) > 0);
    assert!(ld(&stats.read_errors) > 0);
    assert!(
        second_commands > 100,
        "the second bridge sent {second_commands}"
    );
}

#[test]
fn a_cyclone_dds_arm_driver_closes_the_loop_through_the_bridge() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_cyclone_dds_arm_driver_closes_the_loop_through_the_bridge",
    ) {
        return;
    }
    let domain = 72;
    let task = Task::load("pick_cube").unwrap();
    let params = bridge_params(domain);
    let (robot, model, cfg) = connect(&task, &params, EStop::new(), 200.0);
    let l = cfg.limits.clone();
    let driver_cfg = serde_json::json!({
        "domain_id": domain,
        "joint_names": model.joint_names,
        "finger_names": model.gripper.as_ref().unwrap().finger_joints,
        "joint_pos_min_rad": l.joint_pos_min_rad,
        "joint_pos_max_rad": l.joint_pos_max_rad,
        "joint_vel_max_rad_s": l.joint_vel_max_rad_s,
        "initial_joint_pos_rad": task.arm.initial_joint_pos_rad,
        "rate_hz": 250.0,
        "seconds": 9.0,
    });
    let driver = spawn_driver("cyclone_arm.py", &driver_cfg, domain);
    let started = std::time::Instant::now();
    let (b, report) = drive_wild(robot, model, cfg, driver, started, 7, "Cyclone driver");
    let n = |k: &str| report[k].as_f64().unwrap();
    assert!(n("commands") > 300.0, "{report}");
    assert!(n("gripper_commands") > 300.0, "{report}");
    for k in ["bad_length", "non_finite", "outside_limits"] {
        assert_eq!(n(k), 0.0, "{k}: {report}");
    }
    assert!(b.states.load(Ordering::Relaxed) > 300);
    assert_eq!(b.states_missing_joint.load(Ordering::Relaxed), 0);
}

#[test]
fn an_rclpy_joint_trajectory_controller_gets_one_point_per_tick_by_joint_name() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "an_rclpy_joint_trajectory_controller_gets_one_point_per_tick_by_joint_name",
    ) {
        return;
    }
    let domain = 73;
    let task = Task::load("pick_cube").unwrap();
    let params = bridge_params_with(domain, &["command_interface:=joint_trajectory"]);
    let (robot, model, cfg) = connect(&task, &params, EStop::new(), 200.0);
    let l = cfg.limits.clone();
    let driver_cfg = serde_json::json!({
        "interface": "trajectory",
        "joint_names": model.joint_names,
        "finger_names": model.gripper.as_ref().unwrap().finger_joints,
        "joint_pos_min_rad": l.joint_pos_min_rad,
        "joint_pos_max_rad": l.joint_pos_max_rad,
        "joint_vel_max_rad_s": l.joint_vel_max_rad_s,
        "initial_joint_pos_rad": task.arm.initial_joint_pos_rad,
        "initial_gripper_width_m": 0.08,
        "servo_period_s": 1.0 / 200.0,
        "rate_hz": 250.0,
        "seconds": 8.0,
        "schedule": [],
    });
    let driver = spawn_driver("ros_arm_driver.py", &driver_cfg, domain);
    let started = std::time::Instant::now();
    let (_, report) = drive_wild(robot, model, cfg, driver, started, 6, "rclpy driver");
    let n = |k: &str| report[k].as_f64().unwrap();
    assert!(n("commands") > 300.0, "{report}");
    for k in [
        "trajectory_malformed",
        "bad_length",
        "non_finite",
        "outside_limits",
        "too_fast",
    ] {
        assert_eq!(n(k), 0.0, "{k}: {report}");
    }
    assert_eq!(
        report["publisher_type"],
        "trajectory_msgs/msg/JointTrajectory"
    );
}

/// A velocity controller (as UR drivers offer) driven through the bridge: the rclpy arm moves at
/// the commanded velocities and stays inside its limits; when the control loop stalls, the
/// bridge sends zeros within its command timeout, and after the loop's shutdown the last word is
/// zeros (such a controller would otherwise keep its last velocity forever).
#[test]
fn an_rclpy_velocity_controller_is_zeroed_when_the_loop_stalls_and_at_shutdown() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "an_rclpy_velocity_controller_is_zeroed_when_the_loop_stalls_and_at_shutdown",
    ) {
        return;
    }
    let domain = 77;
    let task = Task::load("pick_cube").unwrap();
    let params = bridge_params_with(
        domain,
        &[
            "command_interface:=forward_velocity",
            "command_timeout_s:=0.1",
        ],
    );
    let (robot, model, cfg) = connect(&task, &params, EStop::new(), 200.0);
    let l = cfg.limits.clone();
    let driver_cfg = serde_json::json!({
        "interface": "velocity",
        "joint_names": model.joint_names,
        "finger_names": model.gripper.as_ref().unwrap().finger_joints,
        "joint_pos_min_rad": l.joint_pos_min_rad,
        "joint_pos_max_rad": l.joint_pos_max_rad,
        "joint_vel_max_rad_s": l.joint_vel_max_rad_s,
        "initial_joint_pos_rad": task.arm.initial_joint_pos_rad,
        "initial_gripper_width_m": 0.08,
        "servo_period_s": 1.0 / 200.0,
        "rate_hz": 250.0,
        "seconds": 9.0,
        "schedule": [],
    });
    let driver = spawn_driver("ros_arm_driver.py", &driver_cfg, domain);
    let mut rt = Runtime::new(
        robot,
        cfg,
        model,
        Box::new(Wild { step: 0 }),
        None,
        EStop::new(),
    )
    .expect("the bridge starts");
    rt.run(Duration::from_secs(3), true, |_, _| true);
    // The loop stalls (no tick) for half a second, then goes on.
    std::thread::sleep(Duration::from_millis(500));
    let zeroed_in_stall = rt.robot().stats().velocity_zeroed.load(Ordering::Relaxed);
    rt.run(Duration::from_secs(2), true, |_, _| true);
    assert!(rt.shutdown(2000, true), "the arm came to rest");
    drop(rt);
    let report = driver_report(driver, "rclpy driver");
    println!("velocity report: {report}");
    let n = |k: &str| report[k].as_f64().unwrap();
    assert!(n("commands") > 300.0, "{report}");
    for k in [
        "bad_length",
        "non_finite",
        "outside_limits",
        "velocity_over_limit",
    ] {
        assert_eq!(n(k), 0.0, "{k}: {report}");
    }
    assert!(n("max_travel_rad") > 0.05, "the arm moved: {report}");
    assert_eq!(zeroed_in_stall, 1, "zeros went out once in the stall");
    // Stopped twice: in the stall, and at the end; the last velocity is zero.
    let stops = report["velocity_stops"].as_array().unwrap();
    assert!(stops.len() >= 2, "{report}");
    let last: Vec<f64> = serde_json::from_value(report["last_velocity"].clone()).unwrap();
    assert!(last.iter().all(|v| *v == 0.0), "{report}");
    assert_eq!(report["publisher_type"], "std_msgs/msg/Float64MultiArray");
}

/// A 6-DoF arm (the UR5e-class URDF, `launch/config/ur5e.yaml`'s parameters) on a forward
/// position controller: every command carries the six joints by the driver's names, within the
/// limits, and the arm moves under a policy that pushes at every limit.
#[test]
fn a_six_dof_ur_arm_is_driven_through_its_forward_position_controller() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_six_dof_ur_arm_is_driven_through_its_forward_position_controller",
    ) {
        return;
    }
    let domain = 78;
    let task = Task::load("pick_cube").unwrap();
    let mut argv: Vec<String> = Vec::new();
    for p in [
        format!("domain_id:={domain}"),
        "diagnostics_period_s:=0.5".into(),
        "state_timeout_s:=0.05".into(),
    ] {
        argv.push("-p".into());
        argv.push(p);
    }
    argv.extend(backend_args(domain));
    argv.push("--params-file".into());
    argv.push(repo().join("launch/config/ur5e.yaml").display().to_string());
    let args = RosArgs::parse(&argv).unwrap();
    let mut r = Reader::new(args.parameters("/reflex").unwrap());
    let mut params = BridgeParams::read(&mut r).unwrap();
    r.finish().unwrap();
    params.urdf = repo().join(&params.urdf);
    let (robot, model, mut cfg) = connect(&task, &params, EStop::new(), 200.0);
    reflex_jobs::ros::tighten(&mut cfg, &params);
    assert_eq!(model.dof, 6);
    let l = cfg.limits.clone();
    let pi = std::f64::consts::PI;
    let driver_cfg = serde_json::json!({
        "joint_names": &model.joint_names[..6],
        "finger_names": [],
        "joint_pos_min_rad": &l.joint_pos_min_rad[..6],
        "joint_pos_max_rad": &l.joint_pos_max_rad[..6],
        "joint_vel_max_rad_s": &l.joint_vel_max_rad_s[..6],
        // The tool above the table, pointing down.
        "initial_joint_pos_rad": [pi, -pi / 2.0, pi / 2.0, -pi / 2.0, -pi / 2.0, 0.0],
        "initial_gripper_width_m": 0.0,
        "servo_period_s": 1.0 / 200.0,
        "rate_hz": 250.0,
        "seconds": 8.0,
        "schedule": [],
    });
    let driver = spawn_driver("ros_arm_driver.py", &driver_cfg, domain);
    let started = std::time::Instant::now();
    let (b, report) = drive_wild(robot, model, cfg, driver, started, 6, "UR driver");
    let n = |k: &str| report[k].as_f64().unwrap();
    assert!(n("commands") > 300.0, "{report}");
    for k in ["bad_length", "non_finite", "outside_limits", "too_fast"] {
        assert_eq!(n(k), 0.0, "{k}: {report}");
    }
    assert!(n("max_step_ratio") > 0.01, "the arm moved: {report}");
    assert_eq!(n("gripper_commands"), 0.0, "no gripper: {report}");
    assert_eq!(report["publisher_type"], "std_msgs/msg/Float64MultiArray");
    assert!(b.states.load(Ordering::Relaxed) > 300);
    assert_eq!(b.states_missing_joint.load(Ordering::Relaxed), 0);
}

/// The grey scene with a red ("done") or blue square that `tests/interop/ros_camera_scenes.py`
/// publishes as its `k`-th image, as an rgb8 message.
fn camera_scene(red: bool, k: usize, (w, h): (usize, usize)) -> reflex_ros::msg::Image {
    let side = w.max(h) / 3;
    let (x0, y0) = ((k * 7) % (w - side), (k * 5) % (h - side));
    let colour = if red { [220, 30, 30] } else { [30, 30, 220] };
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
            data.extend(if inside { colour } else { [128, 128, 128] });
        }
    }
    reflex_ros::msg::Image {
        height: h as u32,
        width: w as u32,
        encoding: "rgb8".into(),
        step: (w * 3) as u32,
        data,
        ..Default::default()
    }
}

/// The success detector node (`reflex ros detect`) against a camera in rclpy: a classifier that
/// tells red squares ("done") from blue ones, trained on the scenes resampled the detector's
/// way, watches the camera's topic while rclpy publishes runs of scenes in rgb8, bgr8 (the same
/// colours in the other byte order: read as rgb8, a blue scene would look done), rows padded
/// past their width, and mono8, which is refused. Each run of done scenes is declared a success
/// once, two verdicts in, and only after a "no" again; rclpy hears every verdict's probability.
#[test]
fn the_success_detector_declares_each_run_of_done_scenes_from_an_rclpy_camera_once() {
    use reflex_jobs::ros::detect::{detect, DetectSpec};
    if std::env::var_os("REFLEX_ROS_BACKEND").is_some() {
        // The detector speaks DDS itself (no r2r backend): the default run covers it.
        return;
    }
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_success_detector_declares_each_run_of_done_scenes_from_an_rclpy_camera_once",
    ) {
        return;
    }
    // Training scenes, resampled to 16x16 as the detector resamples what it receives.
    let (w, h, size) = (64, 48, 16);
    let mut frames = reflex_classifier::FrameSet {
        size,
        ..Default::default()
    };
    let mut rgb = vec![0u8; size * size * 3];
    for k in 0..60 {
        for red in [true, false] {
            let mut feed = reflex_ros::camera::CameraFeed::new(reflex_ros::params::CameraParams {
                name: "camera".into(),
                image_topic: String::new(),
                depth_topic: String::new(),
                info_topic: String::new(),
                pose_in_base: None,
                max_age_s: 1.0,
            });
            feed.rgb = Some((camera_scene(red, k, (w, h)), 0));
            feed.colour(&mut rgb, size, size, 0).unwrap();
            let start = frames.images.len();
            frames.images.resize(start + rgb.len(), 0.0);
            reflex_classifier::rgb_tensor_layout(&rgb, &mut frames.images[start..]);
            frames.labels.push(red);
        }
    }
    let cfg = reflex_classifier::ClassifierConfig {
        epochs: 15,
        batch: 32,
        lr: 3e-3,
        ..Default::default()
    };
    let (clf, _) = reflex_classifier::train(&frames, "pick_cube", &cfg, |_, _| {}).unwrap();
    let acc = clf.evaluate(&frames).unwrap();
    assert_eq!(
        acc.accuracy, 1.0,
        "the classifier tells the scenes apart: {acc:?}"
    );
    let dir = std::env::temp_dir().join(format!("reflex-detector-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    clf.save(&dir).unwrap();

    let domain = DOMAIN + 9;
    let argv: Vec<String> = [
        format!("domain_id:={domain}"),
        "image_topic:=/camera/color/image_raw".into(),
        "success_topic:=/detector/success".into(),
        "probability_topic:=/detector/probability".into(),
        "threshold:=0.5".into(),
        "end_after:=2".into(),
    ]
    .into_iter()
    .flat_map(|p| ["-p".to_owned(), p])
    .collect();
    let spec = DetectSpec {
        classifier: dir.clone(),
        seconds: Some(60.0),
        ros: RosArgs::parse(&argv).unwrap(),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let detector = {
        let stop = stop.clone();
        std::thread::spawn(move || detect(&spec, &stop))
    };
    // Indices: blue 0-4, red 5-9, blue bgr8 10-14, red bgr8 15-19, red padded 20-22,
    // mono8 23-25, blue padded 26-28, red padded 29-33.
    let camera = spawn_driver(
        "ros_camera_scenes.py",
        &serde_json::json!({
            "image_topic": "/camera/color/image_raw",
            "success_topic": "/detector/success",
            "probability_topic": "/detector/probability",
            "rate_hz": 10.0, "width": w, "height": h,
            "segments": [
                ["blue", 5, "rgb8", 0], ["red", 5, "rgb8", 0],
                ["blue", 5, "bgr8", 0], ["red", 5, "bgr8", 0],
                ["red", 3, "rgb8", 8], ["red", 3, "mono8", 0],
                ["blue", 3, "rgb8", 8], ["red", 5, "rgb8", 8],
            ],
        }),
        domain,
    );
    let heard = driver_report(camera, "rclpy camera");
    stop.store(true, Ordering::Release);
    let r = detector.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("rclpy: {heard}\ndetector: {r:?}");
    assert_eq!(heard["matched"], true, "{heard}");
    assert_eq!(heard["published"], 34);
    assert_eq!(r.images, 34, "{r:?}");
    assert_eq!(r.refused, 3, "the mono8 images: {r:?}");
    assert_eq!(r.judged + r.superseded, 31, "{r:?}");
    assert_eq!(r.successes, 3, "{r:?}");
    assert_eq!(heard["probabilities"].as_u64(), Some(r.judged), "{heard}");
    // Each success came after the second done scene of its run, before the next run began.
    let at: Vec<u64> = heard["successes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(at.len(), 3, "{heard}");
    assert!((6..15).contains(&at[0]), "{at:?}");
    assert!((16..29).contains(&at[1]), "{at:?}");
    assert!((30..34).contains(&at[2]), "{at:?}");
}
