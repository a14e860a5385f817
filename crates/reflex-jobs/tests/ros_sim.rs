//! The simulated arm served over DDS (`reflex ros sim-arm`'s server, in-process) seen through
//! the bridge with `launch/config/sim_arm.yaml`: the bridge's `SceneView` renders the front
//! camera from the image, depth and camera-info topics, and a point lifted through that depth
//! lands on the cube the tracker topic (`/tf`) reports; the parameter file's camera pose is the
//! simulator's own. A teleop session runs over the same bridge, driven from the page and by an
//! rclpy node's twist. A pixel run's policies drive the arm from the camera topics. Runs in a
//! loopback-only network namespace. `scripts/test-r2r.sh` runs these
//! tests again over the r2r backend, with the cube from the `/objects` pose array.

mod common;

use common::ros::{params, ros_args, ros_args_with, serve_sim_arm};

use nalgebra::Point3;
use reflex_core::{Frame, Robot, SceneView, TrackedObject};
use reflex_jobs::ros::scene_spec;
use reflex_ros::RosRobot;
use reflex_runtime::EStop;
use reflex_sim::Task;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn the_bridge_sees_the_simulated_arms_camera_and_cube_through_ros_topics() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_bridge_sees_the_simulated_arms_camera_and_cube_through_ros_topics",
    ) {
        return;
    }
    let task = Task::load("pick_cube").unwrap();
    let p = params(74);
    let (stop, server, _) = serve_sim_arm(&task, &p, 3, 10.0, (96, 96));
    let mut robot =
        RosRobot::connect(&p, "reflex", "/", scene_spec(&task, &[]), EStop::new()).unwrap();
    assert_eq!(robot.cameras(), vec!["front".to_string()]);
    let mut frame = Frame::new(64, 64);
    let mut objects: Vec<TrackedObject> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        robot.objects(&mut objects);
        if robot.render("front", &mut frame).is_ok() && !objects.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no camera frame or cube pose within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = robot.render("side", &mut frame).unwrap_err().to_string();
    assert!(err.contains("side") && err.contains("front"), "{err}");
    // A reset returns only once the tracker reports the new scene: the cube's pose read right
    // after it is the new placement, never the last episode's (the judge's start heights come
    // from it).
    let mut obs = reflex_core::Observation::default();
    for _ in 0..3 {
        robot.read_scene(&mut obs);
        let before = obs.objects[0].pose.position_m;
        reflex_core::SceneReset::reset_scene(&mut robot, 0).unwrap();
        robot.read_scene(&mut obs);
        let after = obs.objects[0].pose.position_m;
        let moved = (0..3)
            .map(|k| (after[k] - before[k]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            moved > 1e-3,
            "the cube read after a reset is the old scene's: {before:?}"
        );
    }
    stop.store(true, Ordering::Release);
    server.join().unwrap();

    let cube = &objects[0];
    assert_eq!(cube.name, "cube");
    assert!(cube.half_extents_m[0] > 0.02);
    let centre = Point3::from(cube.pose.translation.vector);
    // The cube's top face centre, seen through the camera: it projects into the image, the
    // depth there is a return, and lifting it lands on the cube (within its box and 1 cm).
    let top = centre + nalgebra::Vector3::new(0.0, 0.0, cube.half_extents_m[2]);
    let [x, y] = frame
        .project_world(&top)
        .expect("the cube is in front of the camera");
    assert!(x > 0.0 && y > 0.0 && x < 64.0 && y < 64.0, "({x}, {y})");
    let lifted = frame.lift(x, y).unwrap();
    assert!(
        cube.distance_m(&lifted) < 0.01,
        "lifted {lifted:?}, {} m from the cube at {centre:?}",
        cube.distance_m(&lifted)
    );
    // Colour came through: the cube is red.
    let (u, v) = (x as usize, y as usize);
    let px = &frame.rgb[(v * 64 + u) * 3..(v * 64 + u) * 3 + 3];
    assert!(
        px[0] > px[1] && px[0] > px[2],
        "cube pixel {px:?} is not red"
    );
}

/// `reflex ros train`'s job through DDS on the simulated arm, with short episodes: the
/// scripted demonstrations, the base's evaluation, training steps and the final evaluation
/// all run over ROS topics, paced in real time, with the task's reward judged over the cube's
/// `/tf` pose (no privileged topic); the run writes its policy and leaves the arm at rest.
#[test]
fn training_runs_through_ros_topics_with_the_task_judged_over_tracked_objects() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "training_runs_through_ros_topics_with_the_task_judged_over_tracked_objects",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("reflex-ros-train-{}", std::process::id()));
    let (task_path, task) = common::short_pick_cube(&dir);

    let domain = 76;
    let p = params(domain);
    let (stop, server, stats) = serve_sim_arm(&task, &p, 5, 0.0, (32, 32));
    let ros = ros_args(domain);
    let cfg = common::short_train_config(&task_path, 250.0);
    let out = dir.join("run");
    let summary = reflex_jobs::ros::ros_train(&cfg, &ros, &out, false, None, |_| {}).unwrap();
    stop.store(true, Ordering::Release);
    server.join().unwrap();

    // Two training episodes of 20 steps (the budget is checked at an episode's end).
    assert!(summary.env_steps >= 30, "{summary:?}");
    assert_eq!(summary.stop_reason, "step budget");
    // The base's evaluation and the final one: returns are the task's shaped reward, judged
    // over the cube's /tf pose (its reach term is positive at any distance), not pending
    // rewards (which a robot without a judge reports, and which add nothing to a return).
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        summary.updates > 0,
        "the learner learned beside the loop: {summary:?}"
    );
    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("progress.json")).unwrap()).unwrap();
    for row in progress["evals"].as_array().unwrap() {
        let ret = row["mean_return"].as_f64().unwrap();
        assert!(ret > 0.0, "an evaluation's return {ret}: {progress}");
    }
    // The policy files load for this task, and the arm was left at rest by the bridge (the
    // server applied every command it got, and none was refused).
    let layout = reflex_policy::ObsLayout::of(
        &reflex_sim::Env::new(task.clone())
            .unwrap()
            .reset(0)
            .unwrap(),
    );
    reflex_jobs::policies::load_for(
        &out.join("policy.safetensors"),
        reflex_policy::Role::Residual,
        &task,
        layout,
    )
    .unwrap();
    assert!(stats.commands.load(Ordering::Relaxed) > 1000);
    assert!(
        stats.resets.load(Ordering::Relaxed) >= 5,
        "a reset per episode"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `reflex ros train --obs pixels` through DDS on the simulated arm: the scripted
/// demonstrations take a picture per step from the camera topics (through the camera thread),
/// the base is cloned from them, the learner from pixels runs on its own thread beside the
/// paced loop and pauses for an evaluation, and the run writes its pixel files. Nearly every
/// training step is stored with the picture its base acted on.
#[test]
fn a_run_from_pixels_trains_through_ros_topics_with_its_learner_on_its_own_thread() {
    use reflex_jobs::train::config::ObsMode;
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_run_from_pixels_trains_through_ros_topics_with_its_learner_on_its_own_thread",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("reflex-ros-train-px-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (task_path, task) = common::short_pick_cube(&dir);
    let domain = 79;
    let p = params(domain);
    let (stop, server, stats) = serve_sim_arm(&task, &p, 5, 20.0, (48, 48));
    let ros = ros_args_with(domain, &["cameras:=[front, wrist]"]);
    let mut cfg = common::short_train_config(&task_path, 250.0);
    cfg.obs = ObsMode::Pixels;
    cfg.eval_every = 15;
    cfg.confirm_episodes = 0;
    cfg.pixels.side = 16;
    cfg.pixels.sac.shift_pad = 2;
    cfg.bc.hidden = vec![32, 32];
    cfg.bc.steps = 20;
    cfg.bc.batch_size = 16;
    cfg.agent.hidden = vec![32, 32];
    cfg.learner.batch_size = 16;
    cfg.learner.critic_warmup_updates = 5;
    let out = dir.join("run");
    let summary = reflex_jobs::ros::ros_train(&cfg, &ros, &out, false, None, |_| {}).unwrap();
    stop.store(true, Ordering::Release);
    server.join().unwrap();

    assert_eq!(summary.stop_reason, "step budget", "{summary:?}");
    assert!(summary.env_steps >= 30, "{summary:?}");
    assert!(
        summary.updates > 0,
        "the learner learned on its own thread: {summary:?}"
    );
    // Steps are stored with their pictures: at most the first few, before both cameras'
    // first pictures, are held for a stale input; none is left without its picture.
    assert_eq!(summary.dropped_transitions, 0, "{summary:?}");
    assert!(
        summary.interrupted_steps * 4 < summary.env_steps,
        "{summary:?}"
    );
    // The base's evaluation and at least one with the learner paused, on the camera topics.
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(text.lines().skip(1).count() >= 2, "{text}");
    // The pixel files, for the cameras trained on.
    for f in ["base", "policy"] {
        let (_, _, meta) =
            reflex_jobs::pixel_deploy::load_pixel_net(&out.join(format!("{f}.safetensors")))
                .unwrap();
        assert_eq!(meta["cameras"], serde_json::json!(["wrist", "front"]));
    }
    assert!(stats.commands.load(Ordering::Relaxed) > 1000);
    assert!(
        stats.resets.load(Ordering::Relaxed) >= 5,
        "a reset per episode"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `reflex teleop --robot ros`: a correction session on the simulated arm served over DDS. The
/// policy acts through the bridge; the page's held input lifts the tool; an rclpy node's
/// `TwistStamped` then lowers it while the page streams released inputs (the hub lets the source
/// that moves keep the arm; down, because the page's lift can leave the tool at the workspace's
/// ceiling); the page's success press labels the episode; the session is
/// recorded with the bridge's camera (from the image topics), and its replay is refused with
/// the reason (a real arm's world cannot be re-run).
#[test]
fn a_teleop_session_drives_the_arm_through_ros_from_the_page_and_an_rclpy_twist() {
    use reflex_jobs::teleop::{SessionRobot, TeleopSession, TeleopSpec};
    use reflex_teleop::OperatorClient;
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_teleop_session_drives_the_arm_through_ros_from_the_page_and_an_rclpy_twist",
    ) {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join("target/pyenv/bin/python");
    assert!(python.exists(), "needs target/pyenv: run scripts/test.sh");
    let task = Task::load("pick_cube").unwrap();
    let domain = 77;
    let p = params(domain);
    let (stop, server, _) = serve_sim_arm(&task, &p, 9, 10.0, (96, 96));
    let dir = std::env::temp_dir().join(format!("reflex-teleop-ros-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let session = TeleopSession::start(&TeleopSpec {
        robot: SessionRobot::Ros(ros_args(domain)),
        task: task.clone(),
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed: 0,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: None,
        record: Some(dir.clone()),
        record_frames: true,
        success_hold_steps: 0,
    })
    .unwrap();
    let hub = session.hub().clone();
    let mut page = OperatorClient::connect(&session.ws_url(), Duration::from_secs(5)).unwrap();
    // Streams one input every 33 ms for `secs`; the newest status, the highest and lowest tool
    // and whether a takeover was seen on the way.
    let drive = |page: &mut OperatorClient, motion: [f64; 6], intervene: bool, secs: f64| {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let (mut last, mut top, mut bottom, mut held) = (None, f64::MIN, f64::MAX, false);
        while Instant::now() < end {
            page.input(motion, 1.0, intervene).unwrap();
            if let Some(s) = page.next_status(Duration::from_millis(33)).unwrap() {
                top = top.max(s.tool_m[2]);
                bottom = bottom.min(s.tool_m[2]);
                held |= s.intervening;
                last = Some(s);
            }
        }
        (last.expect("statuses"), (top, bottom), held)
    };
    // The policy acts through the bridge.
    let (before, _, held) = drive(&mut page, [0.0; 6], false, 2.0);
    assert!(before.step > 3 && !held, "{before:?}");
    // The page holds and lifts the tool.
    let (lifted, (top, _), held) = drive(&mut page, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], true, 1.5);
    assert!(held && lifted.executed_action[2] == 1.0, "{lifted:?}");
    assert!(
        top > before.tool_m[2] + 0.05,
        "the page's takeover lifted the tool: {} -> {top}",
        before.tool_m[2]
    );
    // The page lets go; an rclpy operator's twist (tool down: the lift may have left it at the
    // workspace's ceiling) drives while the page streams released inputs.
    let (high, _, _) = drive(&mut page, [0.0; 6], false, 1.0);
    let frame = p.base_frame.clone();
    let mut twist = std::process::Command::new(&python)
        .arg(repo.join("tests/interop/ros_twist_operator.py"))
        .arg(
            serde_json::json!({
                "topic": "/reflex/intervention/twist", "frame": frame, "vz_m_s": -0.2,
                "start_s": 0.0, "move_s": 5.0, "still_s": 0.5,
            })
            .to_string(),
        )
        .env("ROS_DOMAIN_ID", domain.to_string())
        .env("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut moved = (false, f64::MAX);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && twist.try_wait().unwrap().is_none() {
        let (s, (_, bottom), held) = drive(&mut page, [0.0; 6], false, 0.3);
        if held && s.executed_action[2] < 0.0 {
            moved = (true, moved.1.min(bottom));
        }
    }
    let _ = twist.wait();
    assert!(moved.0, "the twist drove the arm");
    assert!(
        moved.1 < high.tool_m[2] - 0.03,
        "the twist lowered the tool: {} -> {}",
        high.tool_m[2],
        moved.1
    );
    let hs = &hub.stats;
    assert!(
        hs.commands.load(Ordering::Relaxed) > 10,
        "twists reached the hub"
    );
    assert!(
        hs.yielded.load(Ordering::Relaxed) > 0,
        "the page's released inputs waited while the twist drove"
    );
    // The page's success press labels the episode in flight.
    page.send(&reflex_teleop::ClientMessage::Event {
        event: reflex_teleop::EventKind::Success,
    })
    .unwrap();
    drive(&mut page, [0.0; 6], false, 1.0);
    page.close();
    let report = session.run_until(|_| true).unwrap();
    stop.store(true, Ordering::Release);
    server.join().unwrap();
    println!("{report:?}");
    assert_eq!(report.labelled, 1, "{report:?}");
    assert!(report.intervened_steps > 10, "{report:?}");

    // Recorded with the bridge's camera; not replayable, and saying why.
    let (header, recorded) = reflex_jobs::teleop::record::read_recording(&dir).unwrap();
    assert_eq!(header.robot, "ros");
    assert_eq!(header.cameras, vec!["front".to_string()]);
    let labelled = recorded
        .iter()
        .find(|e| e.success)
        .expect("the labelled episode");
    assert_eq!(
        labelled.frames.as_ref().unwrap().at.len(),
        labelled.actions.len()
    );
    assert!(report.frames_recorded.unwrap() >= labelled.actions.len() as u64);
    let e = reflex_jobs::teleop::record::replay(&dir, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ros` arm"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `reflex ros run` with a pixel run's files: the camera thread feeds the policies from the
/// front and wrist image topics (the wrist camera has no `pose_in_base`: it serves the pixel
/// policy only), and nearly every policy step acts on a fresh picture. With the wrist topic
/// silent, every policy step holds the arm and nothing reaches the policy; a camera the
/// parameters do not list is refused by name.
#[test]
fn a_pixel_policy_drives_the_arm_from_camera_topics_and_holds_when_one_is_silent() {
    use reflex_jobs::ros::{ros_run, RosRunSpec};
    use reflex_jobs::train::config::TrainConfig;
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_pixel_policy_drives_the_arm_from_camera_topics_and_holds_when_one_is_silent",
    ) {
        return;
    }
    // A pixel run's files, from a few steps of training.
    let dir = std::env::temp_dir().join(format!("reflex-ros-pixels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        max_env_steps: 40,
        demo_episodes: 1,
        eval_every: 1_000,
        eval_episodes: 1,
        heldout_episodes: 0,
        ..common::small_pixel_config()
    };
    cfg.bc.steps = 20;
    cfg.bc.batch_size = 16;
    cfg.learner.learning_starts = 10;
    cfg.learner.critic_warmup_updates = 5;
    reflex_jobs::train::train(&cfg, &dir, false, |_| {}).unwrap();

    let task = Task::load("pick_cube").unwrap();
    let domain = 78;
    let p = params(domain);
    let (stop, server, _) = serve_sim_arm(&task, &p, 5, 20.0, (48, 48));
    let run = |extra: &[&str], seconds: f64| {
        ros_run(&RosRunSpec {
            task: task.clone(),
            policy: dir.join("base.safetensors").display().to_string(),
            residual: Some(dir.join("policy.safetensors")),
            servo_rate_hz: 250.0,
            episodes: 0,
            seconds: Some(seconds),
            ros: ros_args_with(domain, extra),
        })
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

    let live = run(&["cameras:=[front, wrist]"], 5.0).unwrap();
    let (steps, stale) = (
        load(&live.stats.policy_steps),
        load(&live.stats.stale_policy_inputs),
    );
    let (published, _) = live.camera_stacks.expect("a camera thread");
    assert!(steps >= 30, "{steps} policy steps in 5 s at 10 Hz");
    // The first steps may come before both cameras' first pictures; after that every one acts.
    assert!(
        stale * 5 < steps,
        "{stale} of {steps} policy steps held for a stale picture"
    );
    assert!(
        published >= 40,
        "{published} stacks from 20 Hz cameras in 5 s"
    );
    assert!(live.rested);

    let silent = run(
        &[
            "cameras:=[front, wrist]",
            "cameras.wrist.image_topic:=/nobody/color/image_raw",
        ],
        3.0,
    )
    .unwrap();
    let steps = load(&silent.stats.policy_steps);
    assert!(steps >= 15, "{steps} policy steps in 3 s");
    assert_eq!(
        load(&silent.stats.stale_policy_inputs),
        steps,
        "every policy step held the arm"
    );
    assert_eq!(silent.camera_stacks.unwrap().0, 0, "nothing published");

    let err = match run(&[], 1.0) {
        Ok(_) => panic!("a camera the parameters do not list was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("`wrist`") && err.contains("cameras"), "{err}");
    stop.store(true, Ordering::Release);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An arm without the object tracker a task is judged over (`objects_source: none`): the
/// bridge gets no task judge (it would judge poses nobody reports: a cube never lifted,
/// distances to the origin), and `reflex ros train` refuses, naming what is missing, until it
/// has another verdict (a success topic), pictures, demonstrations from recorded sessions and
/// a reward source. reach, judged without objects, keeps its judge. Nothing is sent: the
/// refusals come before any node starts.
#[test]
fn training_on_an_arm_without_a_tracker_asks_for_a_verdict_pictures_sessions_and_a_reward() {
    use reflex_jobs::ros::{ros_train, task_judge};
    use reflex_jobs::train::config::ObsMode;
    let pick = Task::load("pick_cube").unwrap();
    let reach = Task::load("reach").unwrap();
    let untracked = |extra: &[&str]| {
        let mut a = vec!["objects_source:=none"];
        a.extend_from_slice(extra);
        ros_args_with(91, &a)
    };
    let read = |ros: &reflex_ros::RosArgs| {
        let mut r = reflex_ros::Reader::new(ros.parameters("/reflex").unwrap());
        reflex_ros::BridgeParams::read(&mut r).unwrap()
    };
    assert!(task_judge(&pick, &read(&untracked(&[]))).is_none());
    assert!(task_judge(&reach, &read(&untracked(&[]))).is_some());
    assert!(task_judge(&pick, &params(91)).is_some(), "tracked over /tf");

    let dir = std::env::temp_dir().join(format!("reflex-untracked-{}", std::process::id()));
    let mut cfg = reflex_jobs::train::TrainConfig {
        task: "pick_cube".into(),
        ..Default::default()
    };
    let refused = |cfg: &reflex_jobs::train::TrainConfig,
                   ros: &reflex_ros::RosArgs,
                   reward: Option<reflex_learn::stage::RewardPlugin>| {
        ros_train(cfg, ros, &dir, false, reward, |_| {})
            .expect_err("refused")
            .to_string()
    };
    let sparse = || Some(reflex_learn::stage::sparse_plugin(10.0));
    let err = refused(&cfg, &untracked(&[]), sparse());
    assert!(
        err.contains("success_topic") && err.contains("objects_source"),
        "{err}"
    );
    let ros = untracked(&["success_topic:=/operator/success"]);
    let err = refused(&cfg, &ros, sparse());
    assert!(err.contains("--obs pixels"), "{err}");
    cfg.obs = ObsMode::Pixels;
    let err = refused(&cfg, &ros, sparse());
    assert!(err.contains("demo_sessions"), "{err}");
    cfg.demo_sessions = vec![dir.join("session")];
    let err = refused(&cfg, &ros, None);
    assert!(err.contains("--reward sparse"), "{err}");
    assert!(!dir.exists(), "nothing was written before the refusals");
}

/// `reflex ros train` on an arm without an object tracker, end to end over DDS: the simulated
/// arm's cube pose is ignored (`objects_source: none`), the demonstrations come from a
/// recorded session, the policy sees the camera topics, and an operator's success button (an
/// rclpy node pressing every 0.9 s) is the only verdict: it ends training episodes, which the
/// sparse reward source turns into the reward, and evaluation episodes. No step carries a
/// reward of the task's (on the old code the task's judge scored the absent poses).
#[test]
fn a_run_without_a_tracker_learns_from_sessions_pictures_and_an_operators_success_button() {
    use reflex_jobs::teleop::TeleopSession;
    use reflex_jobs::train::config::ObsMode;
    use std::time::{Duration, Instant};
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_run_without_a_tracker_learns_from_sessions_pictures_and_an_operators_success_button",
    ) {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join("target/pyenv/bin/python");
    assert!(python.exists(), "needs target/pyenv: run scripts/test.sh");
    let dir = std::env::temp_dir().join(format!("reflex-ros-untracked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A session recorded on the simulator: the scripted expert's first success is the
    // demonstration.
    let session_dir = dir.join("session");
    let spec = common::scripted_session(Task::load("pick_cube").unwrap(), 3, &session_dir, 0);
    let session = TeleopSession::start(&spec).unwrap();
    let started = Instant::now();
    session
        .run_until(|s| {
            s.episodes().iter().any(|e| e.row.success)
                || started.elapsed() > Duration::from_secs(30)
        })
        .unwrap();

    let (task_path, task) = common::short_pick_cube(&dir);
    let domain = 93;
    let p = params(domain);
    let (stop, server, _) = serve_sim_arm(&task, &p, 5, 20.0, (48, 48));
    let topic = "/operator/success";
    let mut button = std::process::Command::new(&python)
        .arg(repo.join("tests/interop/ros_success_button.py"))
        .arg(serde_json::json!({"topic": topic, "period_s": 0.9, "seconds": 60.0}).to_string())
        .env("ROS_DOMAIN_ID", domain.to_string())
        .env("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ros = ros_args_with(
        domain,
        &[
            "cameras:=[front, wrist]",
            "objects_source:=none",
            &format!("success_topic:={topic}"),
        ],
    );
    let mut cfg = common::short_train_config(&task_path, 250.0);
    cfg.obs = ObsMode::Pixels;
    cfg.demo_sessions = vec![session_dir];
    cfg.max_env_steps = 40;
    cfg.eval_every = 20;
    cfg.confirm_episodes = 0;
    cfg.pixels.side = 16;
    cfg.pixels.sac.shift_pad = 2;
    cfg.bc.hidden = vec![32, 32];
    cfg.bc.steps = 20;
    cfg.bc.batch_size = 16;
    cfg.agent.hidden = vec![32, 32];
    cfg.learner.batch_size = 16;
    cfg.learner.critic_warmup_updates = 5;
    let out = dir.join("run");
    let sparse = reflex_learn::stage::sparse_plugin(10.0);
    let summary =
        reflex_jobs::ros::ros_train(&cfg, &ros, &out, false, Some(sparse), |_| {}).unwrap();
    let _ = button.kill();
    let _ = button.wait();
    stop.store(true, Ordering::Release);
    server.join().unwrap();

    let from = summary
        .demo_sessions
        .as_ref()
        .expect("demonstrations from the session");
    assert!(from.used >= 1, "{from:?}");
    assert_eq!(summary.demo_episodes, from.used);
    // The button's presses ended training episodes as successes: the sparse reward's.
    let stage = summary
        .reward_stage
        .as_ref()
        .expect("the sparse stage's report");
    assert!(
        stage["sparse"]["successes"].as_u64().unwrap_or(0) >= 1,
        "{stage}"
    );
    // No judge scored the absent poses: every evaluation's return is zero.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("progress.json")).unwrap()).unwrap();
    let evals = state["evals"].as_array().unwrap();
    assert!(evals.len() >= 2, "{state}");
    for e in evals {
        assert_eq!(e["mean_return"].as_f64(), Some(0.0), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
