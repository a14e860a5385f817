//! The simulated arm served over DDS (`reflex ros sim-arm`'s server, in-process) seen through
//! the bridge with `launch/config/sim_arm.yaml`: the bridge's `SceneView` renders the front
//! camera from the image, depth and camera-info topics, and a point lifted through that depth
//! lands on the cube the tracker topic (`/tf`) reports; the parameter file's camera pose is the
//! simulator's own. Runs in a loopback-only network namespace. `scripts/test-r2r.sh` runs these
//! tests again over the r2r backend, with the cube from the `/objects` pose array.

use nalgebra::Point3;
use reflex_core::{Frame, Robot, SceneView, TrackedObject};
use reflex_jobs::ros::{scene_spec, SimServedArm};
use reflex_ros::arm_server::{serve, ArmServerSettings, ArmServerStats};
use reflex_ros::{BridgeParams, Reader, RosArgs, RosRobot};
use reflex_runtime::EStop;
use reflex_sim::Task;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ROS arguments of a node run with `launch/config/sim_arm.yaml` on `domain`.
fn ros_args(domain: u32) -> RosArgs {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut argv = vec![
        "--params-file".to_string(),
        repo.join("launch/config/sim_arm.yaml")
            .display()
            .to_string(),
        "-p".into(),
        format!("domain_id:={domain}"),
        "-p".into(),
        format!("urdf:={}", repo.join("urdf/reflex_arm.urdf").display()),
    ];
    // The same tests over the r2r backend (scripts/test-r2r.sh): its rcl takes the domain from
    // the environment, and the cube comes from the pose array (PyPI's ROS 2 has no tf2_msgs).
    if let Ok(backend) = std::env::var("REFLEX_ROS_BACKEND") {
        for p in [
            format!("backend:={backend}"),
            "objects_source:=pose_array".into(),
            "objects_topic:=/objects".into(),
        ] {
            argv.push("-p".into());
            argv.push(p);
        }
        std::env::set_var("ROS_DOMAIN_ID", domain.to_string());
    }
    RosArgs::parse(&argv).unwrap()
}

fn params(domain: u32) -> BridgeParams {
    let mut r = Reader::new(ros_args(domain).parameters("/reflex").unwrap());
    let p = BridgeParams::read(&mut r).unwrap();
    r.finish().unwrap();
    p
}

#[test]
fn the_bridge_sees_the_simulated_arms_camera_and_cube_through_ros_topics() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_bridge_sees_the_simulated_arms_camera_and_cube_through_ros_topics",
    ) {
        return;
    }
    let task = Task::load("pick_cube").unwrap();
    let p = params(74);
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (task, p, stop) = (task.clone(), p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut arm = SimServedArm::new(&task, 250.0, 3).unwrap();
            let settings = ArmServerSettings {
                node_name: "reflex_sim_arm".into(),
                namespace: "/".into(),
                params: p,
                rate_hz: 250.0,
                scene_rate_hz: 50.0,
                camera_rate_hz: 10.0,
                camera_size: (96, 96),
            };
            serve(
                &mut arm,
                &settings,
                &stop,
                &Arc::new(ArmServerStats::default()),
            )
            .unwrap();
        })
    };
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
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(format!("reflex-ros-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // pick_cube with 20-step (2 s) episodes.
    let text = std::fs::read_to_string(repo.join("sim/tasks/pick_cube.toml")).unwrap();
    assert!(text.contains("episode_steps = 60"));
    let task_path = dir.join("pick_cube_short.toml");
    std::fs::write(
        &task_path,
        text.replace("episode_steps = 60", "episode_steps = 20"),
    )
    .unwrap();
    let task = Task::load(task_path.to_str().unwrap()).unwrap();

    let domain = 76;
    let p = params(domain);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ArmServerStats::default());
    let server = {
        let (task, p, stop, stats) = (task.clone(), p.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || {
            let mut arm = SimServedArm::new(&task, 250.0, 5).unwrap();
            let settings = ArmServerSettings {
                node_name: "reflex_sim_arm".into(),
                namespace: "/".into(),
                params: p,
                rate_hz: 250.0,
                scene_rate_hz: 50.0,
                camera_rate_hz: 0.0,
                camera_size: (32, 32),
            };
            serve(&mut arm, &settings, &stop, &stats).unwrap();
        })
    };
    let ros = ros_args(domain);
    let mut cfg = reflex_jobs::train::TrainConfig {
        task: task_path.display().to_string(),
        demo_episodes: 2,
        max_env_steps: 30,
        eval_episodes: 1,
        minutes: 2.0,
        ..Default::default()
    };
    cfg.runtime.servo_rate_hz = 250.0;
    // Updates from the first online step, on the learner thread beside the real-time loop.
    cfg.learner.learning_starts = 1;
    cfg.learner.batch_size = 32;
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
