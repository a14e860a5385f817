//! Rewards and training see the world only through `Robot`, `SceneView` and `SceneReset`:
//! keypoint answers lift onto tracked objects through depth alone (no segmentation), and a
//! training run with keypoint rewards goes through a robot that hides the simulator behind
//! those traits.

use nalgebra::Point3;
use reflex_core::{
    Action, ArmModel, Frame, JointCommand, Observation, Outcome, Robot, RobotError, RobotState,
    SceneError, SceneReset, SceneView, TrackedObject,
};
use reflex_jobs::arms::{Arms, ArmsError, SimArms};
use reflex_jobs::rewards::{reward_plugin, RewardFlags, RewardSource};
use reflex_jobs::train::{train_on, TrainConfig};
use reflex_reward::parse::{parse_keypoints, Grid, KeypointAnswer};
use reflex_reward::scene::{oracle_keypoints, PlanError, Scene};
use reflex_sim::{Env, SimRobot, Task};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The oracle's noiseless answer on a rendered pick_cube frame parses, lifts back onto the
/// cube within 5 mm of the visible keypoint (the centre of the top face), attaches to the
/// cube, and puts the waypoint roughly above it: with the frame's segmentation removed.
#[test]
fn oracle_answers_lift_back_to_the_true_keypoints_without_segmentation() {
    let mut env = Env::new(Task::load("pick_cube").unwrap()).unwrap();
    let mut rng = reflex_core::Rng::new(1);
    for seed in 0..3 {
        env.reset(seed).unwrap();
        let mut scene = Scene::capture(&env, "front", Frame::new(160, 120)).unwrap();
        scene.frame.segmentation.clear();
        let obs = env.observation();
        let text =
            oracle_keypoints(&scene.frame, obs.keypoints(), obs.goals(), 0.0, &mut rng).unwrap();
        let grid = Grid {
            width: 160,
            height: 120,
            cols: 8,
            rows: 6,
        };
        let answer = parse_keypoints(&text, &grid).unwrap();
        let plan = scene.lift(&answer).unwrap();
        assert_eq!(plan.affordance.body, 0, "attached to the cube");
        // pick_cube's keypoints: the cube's centre (hidden inside it), the top face's centre.
        let truth = Point3::from(obs.keypoints_m[1]);
        let got = plan.affordance.world(&scene.objects[0].pose);
        assert!(
            (got - truth).norm() < 0.005,
            "seed {seed}: {got} vs {truth}"
        );
        let w = plan.waypoints[0];
        assert!(w.z > truth.z + 0.06, "seed {seed}: waypoint {w} vs {truth}");
        assert!(
            (w.xy() - truth.xy()).norm() < 0.08,
            "seed {seed}: {w} vs {truth}"
        );
    }
}

/// A point on the table is refused as an affordance, naming the nearest object and how far it
/// is; a scene that tracks nothing refuses every answer; an unknown camera is named.
#[test]
fn an_affordance_off_every_object_is_refused_naming_the_nearest() {
    let mut env = Env::new(Task::load("pick_cube").unwrap()).unwrap();
    env.reset(0).unwrap();
    let mut scene = Scene::capture(&env, "front", Frame::new(160, 120)).unwrap();
    // The bottom centre of the image sees the table's front edge region.
    let answer = KeypointAnswer {
        affordance: [80.0, 118.0],
        waypoints: vec![],
    };
    match scene.lift(&answer) {
        Err(PlanError::NotOnObject {
            nearest,
            distance_m,
        }) => {
            assert_eq!(nearest, "cube");
            assert!(distance_m > 0.05, "{distance_m}");
        }
        other => panic!("{other:?}"),
    }
    scene.objects.clear();
    assert_eq!(scene.lift(&answer), Err(PlanError::NoObjects));
    match Scene::capture(&env, "ceiling", Frame::new(16, 16)) {
        Err(SceneError::UnknownCamera { camera, available }) => {
            assert_eq!(camera, "ceiling");
            assert!(available.contains(&"front".to_owned()));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// A robot that is not the simulator's type: the simulator sits inside, reachable only
/// through the traits, and the frames it hands out carry no segmentation.
struct HiddenArm {
    inner: SimRobot,
    renders: Arc<AtomicU64>,
    object_reads: Arc<AtomicU64>,
}

impl Robot for HiddenArm {
    fn read_state(&mut self, s: &mut RobotState) -> Result<(), RobotError> {
        self.inner.read_state(s)
    }
    fn write_command(&mut self, c: &JointCommand) -> Result<(), RobotError> {
        self.inner.write_command(c)
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn read_scene(&mut self, obs: &mut Observation) {
        self.inner.read_scene(obs)
    }
    fn judge(&mut self, obs: &Observation, action: &Action) -> Outcome {
        self.inner.judge(obs, action)
    }
}

impl SceneView for HiddenArm {
    fn cameras(&self) -> Vec<String> {
        vec!["front".into()]
    }
    fn render(&self, camera: &str, frame: &mut Frame) -> Result<(), SceneError> {
        if camera != "front" {
            return Err(SceneError::UnknownCamera {
                camera: camera.into(),
                available: self.cameras(),
            });
        }
        SceneView::render(&self.inner, camera, frame)?;
        // A real camera has no segmentation.
        frame.segmentation = Vec::new();
        self.renders.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn objects(&self, out: &mut Vec<TrackedObject>) {
        self.object_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.objects(out)
    }
}

impl SceneReset for HiddenArm {
    type Error = <SimRobot as SceneReset>::Error;
    fn reset_scene(&mut self, seed: u64) -> Result<(), Self::Error> {
        self.inner.reset_scene(seed)
    }
}

struct HiddenArms {
    sim: SimArms,
    renders: Arc<AtomicU64>,
    object_reads: Arc<AtomicU64>,
}

impl Arms for HiddenArms {
    type Robot = HiddenArm;
    fn task(&self) -> &Task {
        self.sim.task()
    }
    fn rate_hz(&self) -> f64 {
        self.sim.rate_hz()
    }
    fn make(&self, seed: u64) -> Result<(HiddenArm, ArmModel), ArmsError> {
        let (inner, model) = self.sim.make(seed)?;
        Ok((
            HiddenArm {
                inner,
                renders: self.renders.clone(),
                object_reads: self.object_reads.clone(),
            },
            model,
        ))
    }
}

/// 2,000 training steps of pick_cube with keypoint rewards from the oracle server (loopback
/// HTTP), through the hidden arm: every training episode's question was asked on the hidden
/// arm's frames, its answers were lifted onto its tracked objects, and the transitions that
/// reached the learner carry keypoint rewards.
#[test]
fn training_with_keypoint_rewards_runs_through_a_robot_that_hides_the_simulator() {
    let dir = std::env::temp_dir().join(format!("reflex-hidden-arm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        task: "pick_cube".into(),
        seed: 2,
        minutes: 10.0,
        max_env_steps: 2000,
        target_success: 2.0,
        demo_episodes: 4,
        eval_every: 1_000_000,
        eval_episodes: 2,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.bc.steps = 100;
    cfg.bc.hidden = vec![32, 32];
    cfg.agent.hidden = vec![32, 32];
    cfg.learner.batch_size = 32;
    cfg.learner.critic_warmup_updates = 100;
    cfg.reward.source = Some(RewardSource::VlmKeypoints);
    let task = Task::load("pick_cube").unwrap();
    let arms = HiddenArms {
        sim: SimArms::new(task.clone(), cfg.runtime.servo_rate_hz),
        renders: Arc::default(),
        object_reads: Arc::default(),
    };
    let (plugin, oracle) =
        reward_plugin(&task, cfg.seed, &cfg.reward, &RewardFlags::default(), &dir).unwrap();
    assert!(
        oracle.is_some(),
        "no --vlm-url: the built-in oracle answers"
    );
    let s = train_on(&arms, &cfg, &dir, false, plugin, |_| {}).unwrap();
    assert_eq!(s.reward, "vlm-keypoints");
    assert!(s.env_steps >= 2000 && s.updates > 0, "{s:?}");
    let stage = s.reward_stage.as_ref().unwrap();
    let k = &stage["keypoints"];
    let n = |key: &str| k[key].as_u64().unwrap();
    assert!(n("episodes") >= 3, "{stage}");
    assert!(n("planned") >= 2, "answers were lifted: {stage}");
    assert!(n("rewarded") > 500, "rewarded transitions: {stage}");
    assert_eq!(n("unliftable"), 0, "{stage}");
    let renders = arms.renders.load(Ordering::Relaxed);
    assert!(
        renders >= n("episodes"),
        "every question was asked on the hidden arm's own frames ({renders} renders)"
    );
    assert!(arms.object_reads.load(Ordering::Relaxed) >= n("episodes"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A slow VLM (800 ms per answer, one at a time, a queue of one): the simulated driver waits
/// for it between episodes instead of outrunning it. (At 300 ms a CI run simulated its
/// episodes slower than the answers came, so the driver never had to wait and the test
/// failed on `reward_wait_s`; an answer now takes about twice an episode even on a slow
/// machine.) The former driver started episodes as
/// fast as it could simulate them, so most questions met a full queue and their episodes were
/// dropped unasked, and the dropped steps did not even slow the simulator down.
#[test]
fn the_simulator_waits_for_a_slow_vlm_instead_of_dropping_episodes() {
    use reflex_reward::oracle::{Oracle, OracleConfig};
    use reflex_reward::vlm::VlmConfig;
    let server = Oracle::start(
        "127.0.0.1:0".parse().unwrap(),
        OracleConfig {
            latency: std::time::Duration::from_millis(800),
            ..Default::default()
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("reflex-slow-vlm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        task: "pick_cube".into(),
        seed: 4,
        minutes: 10.0,
        max_env_steps: 600,
        target_success: 2.0,
        demo_episodes: 3,
        eval_every: 1_000_000,
        eval_episodes: 1,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.bc.steps = 50;
    cfg.bc.hidden = vec![16, 16];
    cfg.agent.hidden = vec![16, 16];
    cfg.learner.batch_size = 16;
    cfg.reward.source = Some(RewardSource::VlmKeypoints);
    cfg.reward.vlm = Some(VlmConfig {
        base_url: server.base_url(),
        concurrency: 1,
        queue: 1,
        ..Default::default()
    });
    let task = Task::load("pick_cube").unwrap();
    let (plugin, oracle) =
        reward_plugin(&task, cfg.seed, &cfg.reward, &RewardFlags::default(), &dir).unwrap();
    assert!(oracle.is_none(), "the configured server answers");
    let arms = SimArms::new(task, cfg.runtime.servo_rate_hz);
    let s = train_on(&arms, &cfg, &dir, false, plugin, |_| {}).unwrap();
    let k = &s.reward_stage.as_ref().unwrap()["keypoints"];
    assert_eq!(k["not_asked"], 0, "{k}");
    assert!(k["planned"].as_u64().unwrap() >= 5, "{k}");
    assert!(s.reward_wait_s > 0.1, "the driver waited: {s:?}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
