//! End-to-end checks of the learning stack through the runtime and the simulator.

mod common;

use reflex_jobs::arms::{runtime, SimArms};
use reflex_jobs::train::{run_episodes, train, TrainConfig};
use reflex_learn::sac::{Agent, AgentConfig};
use reflex_runtime::{Mlp, NetPolicy, ResidualPolicy, WeightsSlot};
use reflex_sim::{Env, ScriptedExpert, Task};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A freshly initialised residual (last layer zero) leaves the base's behaviour exactly
/// unchanged: same executed actions, same outcomes, tick for tick.
#[test]
fn a_zero_initialised_residual_leaves_the_base_unchanged() {
    let task = Task::load("pick_cube").unwrap();
    let mut env = Env::new(task.clone()).unwrap();
    let obs_dim = env.reset(0).unwrap().flat.len();
    let act_dim = task.action_space.dim();
    // A base cloned from two expert episodes (any fixed network would do).
    let expert = ScriptedExpert::new(&task, env.model());
    let arms = SimArms::new(task.clone(), 500.0);
    let settings = reflex_runtime::RuntimeSettings::default();
    let mut rt = runtime(&arms, 0, Box::new(expert), None, &settings).unwrap();
    let (_, demos) = run_episodes(&mut rt, [11u64, 12].into_iter(), true, false).unwrap();
    let obs: Vec<f32> = demos
        .iter()
        .flat_map(|t| t.obs.as_slice().to_vec())
        .collect();
    let act: Vec<f32> = demos
        .iter()
        .flat_map(|t| t.action.as_slice().to_vec())
        .collect();
    let cfg = reflex_learn::bc::BcConfig {
        hidden: vec![32, 32],
        steps: 50,
        ..Default::default()
    };
    let (base, _) = reflex_learn::bc::behaviour_clone(&obs, &act, obs_dim, act_dim, &cfg, 1);

    let run = |residual: bool| {
        let base_policy = NetPolicy::new(WeightsSlot::new(base.clone()), obs_dim, act_dim).unwrap();
        let res = residual.then(|| {
            let agent = Agent::new(AgentConfig::default(), obs_dim + act_dim, act_dim, 5);
            ResidualPolicy::tanh_gaussian(
                WeightsSlot::new(agent.exploring_actor()),
                obs_dim,
                act_dim,
                Arc::new(AtomicBool::new(false)),
                1,
            )
            .unwrap()
        });
        let mut rt = runtime(&arms, 0, Box::new(base_policy), res, &settings).unwrap();
        run_episodes(&mut rt, [21u64, 22].into_iter(), true, false).unwrap()
    };
    let (with_r, with_t) = run(true);
    let (without_r, without_t) = run(false);
    assert_eq!(with_r, without_r);
    assert_eq!(with_t.len(), without_t.len());
    for (a, b) in with_t.iter().zip(&without_t) {
        assert_eq!(a.action, b.action);
        assert_eq!(a.base_action, a.action, "the residual added something");
        assert_eq!(a.next_obs, b.next_obs);
    }
    // The deployed form (tanh(mean)) of a fresh actor is exactly zero too.
    let agent = Agent::new(AgentConfig::default(), obs_dim + act_dim, act_dim, 5);
    let mut det: Mlp = agent.deterministic_actor();
    let mut out = vec![1.0f32; act_dim];
    det.forward(&vec![0.3; obs_dim + act_dim], &mut out)
        .unwrap();
    assert!(out.iter().all(|v| *v == 0.0));
}

/// A short residual training run on `reach` goes through every stage and writes every output;
/// its first evaluation is exactly the base's; a resumed run continues from its checkpoint
/// and replay.
#[test]
fn a_short_run_on_reach_writes_its_outputs_and_resumes() {
    let dir = std::env::temp_dir().join(format!("reflex-train-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        task: "reach".into(),
        seed: 1,
        minutes: 10.0,
        max_env_steps: SMOKE_STEPS,
        target_success: 2.0,
        demo_episodes: 10,
        eval_every: SMOKE_STEPS / 2,
        eval_episodes: 10,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.bc.steps = 300;
    cfg.bc.hidden = vec![64, 64];
    cfg.agent.hidden = vec![64, 64];
    cfg.learner.batch_size = 64;
    cfg.learner.utd = 1.0;
    cfg.learner.critic_warmup_updates = 200;
    cfg.learner.checkpoint_every = 200;
    let s = train(&cfg, &dir, false, |_| {}).unwrap();
    eprintln!("{s:?}");
    for f in [
        "summary.json",
        "metrics.csv",
        "curve.png",
        "base.safetensors",
        "policy.safetensors",
        "config.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(s.updates > 0 && s.env_steps >= SMOKE_STEPS, "{s:?}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() >= 3, "{csv}");
    // The first evaluation is the base (the residual starts at zero).
    let first_rate: f64 = rows[0].split(',').nth(4).unwrap().parse().unwrap();
    assert_eq!(first_rate, s.base_success_rate);
    assert!(dir.join("checkpoints").read_dir().unwrap().count() >= 1);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for k in [
        "task",
        "seed",
        "env_steps",
        "updates",
        "wall_s",
        "base_success_rate",
        "final_success_rate",
        "best_success_rate",
    ] {
        assert!(summary.get(k).is_some(), "summary.json lacks {k}");
    }
    // A run ended on its budget hands over its best evaluation's weights (`keep_best`): the
    // last ones when they scored as well, else those kept in best_actor.safetensors.
    let handed = s.handed_over.clone().expect("handed_over");
    assert_eq!(handed.success_rate, s.best_success_rate, "{handed:?}");
    let best = Mlp::load(&dir.join("best_actor.safetensors")).unwrap();
    if handed.why == "best evaluation" {
        let obs_dim = best.dims()[0];
        let act_dim = best.dims().last().unwrap() / 2;
        let mut deployed = reflex_policy::PolicyFile::load(&dir.join("policy.safetensors"))
            .unwrap()
            .mlp;
        let mut kept = reflex_learn::sac::deterministic_of(&best, act_dim).unwrap();
        let (mut a, mut b) = (vec![0.0f32; act_dim], vec![1.0f32; act_dim]);
        let x: Vec<f32> = (0..obs_dim).map(|i| 0.1 * i as f32 - 0.5).collect();
        deployed.forward(&x, &mut a).unwrap();
        kept.forward(&x, &mut b).unwrap();
        assert_eq!(
            a, b,
            "policy.safetensors is not the best evaluation's weights"
        );
    } else {
        assert_eq!(handed.why, "last");
        assert_eq!(s.final_success_rate, s.best_success_rate);
    }

    // Resume with a larger budget and a target every evaluation reaches, confirmed on 3 fresh
    // scenes: the step and update counters carry on, and the run stops at its next
    // evaluation once the confirmation passes.
    cfg.max_env_steps = s.env_steps + 600;
    cfg.target_success = 0.0;
    cfg.confirm_episodes = 3;
    let r = train(&cfg, &dir, true, |_| {}).unwrap();
    assert_eq!(r.stop_reason, "target success reached", "{r:?}");
    assert_eq!(r.confirmations.len(), 1, "{:?}", r.confirmations);
    let c = &r.confirmations[0];
    assert!(c.passed && c.episodes == 3, "{c:?}");
    assert_eq!(r.steps_to_target, Some(c.env_steps));
    assert!(c.env_steps > s.env_steps, "{c:?}");
    // Its scenes are none of the run's evaluation seeds (stream 2) nor training's (stream 3).
    let stream = |k: u64| cfg.seed * 1_000_003 + k * 10_000_000;
    assert!(c.first_seed >= stream(4) + 10_000_000, "{c:?}");
    assert_eq!(r.handed_over.as_ref().map(|h| h.why.as_str()), Some("last"));
    assert!(
        r.env_steps >= s.env_steps + 300,
        "{} then {}",
        s.env_steps,
        r.env_steps
    );
    assert!(r.updates > s.updates, "{} then {}", s.updates, r.updates);
    assert_eq!(r.base_success_rate, s.base_success_rate);
    let _ = std::fs::remove_dir_all(&dir);
}

const SMOKE_STEPS: u64 = 800;

/// A run whose budget ends before any periodic evaluation is judged once, at the end: a final
/// evaluation at the target is confirmed on fresh scenes like any other, and only the confirmed
/// one counts as reaching it (`steps_to_target`).
#[test]
fn a_final_evaluation_at_the_target_is_confirmed_too() {
    let dir = std::env::temp_dir().join(format!("reflex-train-final-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        task: "reach".into(),
        seed: 2,
        minutes: 10.0,
        max_env_steps: 150,
        target_success: 0.0,
        confirm_episodes: 2,
        demo_episodes: 3,
        eval_every: 100_000,
        eval_episodes: 2,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.bc.steps = 50;
    cfg.bc.hidden = vec![16, 16];
    cfg.agent.hidden = vec![16, 16];
    cfg.learner.batch_size = 16;
    cfg.learner.learning_starts = 16;
    cfg.learner.critic_warmup_updates = 5;
    let s = train(&cfg, &dir, false, |_| {}).unwrap();
    assert_eq!(s.stop_reason, "step budget", "{s:?}");
    assert_eq!(s.confirmations.len(), 1, "{:?}", s.confirmations);
    let c = &s.confirmations[0];
    assert!(c.passed && c.episodes == 2, "{c:?}");
    assert_eq!(
        c.env_steps, s.env_steps,
        "the final evaluation was not the one confirmed"
    );
    assert_eq!(s.steps_to_target, Some(s.env_steps));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Residual SAC from a base cloned from 40 demonstrations beats that base on `reach` within
/// 10,000 environment steps over three training seeds (not one picked by hand): by at least 5
/// points on average, and no seed more than 5 points worse (about the evaluation's noise), on
/// 150 seeded evaluation episodes before and after (seeds the run never trains on). Measured
/// (2026-12-02, this test's settings): seeds 3, 4, 6 went 61.3 -> 61.3, 70.7 -> 68.0 and
/// 53.3 -> 82.0% (mean gain 8.7 points).
/// Smaller networks and a shorter warm-up than the defaults keep it inside CI's budget, and
/// lockstep learning makes each run reproducible (a threaded run depends on thread timing).
#[test]
fn a_short_run_on_reach_beats_its_base_over_three_seeds() {
    // The seeds train side by side (each run is lockstep, so its result does not depend on the
    // others sharing the cores).
    let run = |seed: u64| {
        let dir =
            std::env::temp_dir().join(format!("reflex-train-beats-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = TrainConfig {
            task: "reach".into(),
            seed,
            minutes: 10.0,
            max_env_steps: BEAT_STEPS,
            target_success: 2.0,
            demo_episodes: 40,
            eval_every: BEAT_STEPS,
            eval_episodes: 150,
            heldout_episodes: 0,
            ..Default::default()
        };
        cfg.agent.hidden = vec![128, 128];
        cfg.agent.actor_lr = 3e-4;
        cfg.learner.critic_warmup_updates = 500;
        cfg.learner.lockstep = true;
        let s = train(&cfg, &dir, false, |_| {}).unwrap();
        eprintln!(
            "seed {seed}: base {:.3} -> {:.3} after {} steps",
            s.base_success_rate, s.final_success_rate, s.env_steps
        );
        let _ = std::fs::remove_dir_all(&dir);
        (seed, s.base_success_rate, s.final_success_rate)
    };
    let gains: Vec<(u64, f64, f64)> = std::thread::scope(|scope| {
        let runs: Vec<_> = BEAT_SEEDS
            .iter()
            .map(|&seed| scope.spawn(move || run(seed)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (seed, base, last) in &gains {
        assert!(
            *last >= base + BEAT_MIN_GAIN,
            "seed {seed}: base {base} -> {last} ({gains:?})"
        );
    }
    let mean = gains.iter().map(|(_, b, l)| l - b).sum::<f64>() / gains.len() as f64;
    assert!(mean >= BEAT_MEAN_GAIN, "mean gain {mean} ({gains:?})");
}

const BEAT_SEEDS: [u64; 3] = [3, 4, 6];
const BEAT_STEPS: u64 = 10_000;
const BEAT_MIN_GAIN: f64 = -0.05;
const BEAT_MEAN_GAIN: f64 = 0.05;

/// Two lockstep runs with the same seed train the same policy, bit for bit: what makes the
/// test above reproducible.
#[test]
fn lockstep_runs_are_reproducible() {
    let run = |k: u32| {
        let dir =
            std::env::temp_dir().join(format!("reflex-train-lockstep-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = TrainConfig {
            task: "reach".into(),
            seed: 2,
            max_env_steps: 700,
            target_success: 2.0,
            demo_episodes: 5,
            eval_every: 700,
            eval_episodes: 3,
            heldout_episodes: 0,
            ..Default::default()
        };
        cfg.agent.hidden = vec![32, 32];
        cfg.bc.steps = 200;
        cfg.learner.critic_warmup_updates = 100;
        cfg.learner.publish_every = 20;
        cfg.learner.lockstep = true;
        let s = train(&cfg, &dir, false, |_| {}).unwrap();
        // Compared as loaded weights: the file's metadata map is written in hash order.
        let policy = format!("{:?}", Mlp::load(&dir.join("policy.safetensors")).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        (s.env_steps, s.updates, policy)
    };
    let (a, b) = (run(0), run(1));
    assert!(a.1 > 300, "{} updates: too few to mean anything", a.1);
    assert_eq!((a.0, a.1), (b.0, b.1));
    assert!(a.2 == b.2, "the two policies differ");
}

/// A short run from pixels (`obs = "pixels"`): demonstrations with a picture per step, a base
/// cloned from them, SAC whose encoder learns from the critics, the held-out evaluation, and
/// the same report files as a run on state; then `--resume` continues it from its replay's log
/// and its checkpoint.
#[test]
fn a_short_run_from_pixels_goes_through_every_stage() {
    let dir = std::env::temp_dir().join(format!("reflex-train-pixels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig {
        max_env_steps: 120,
        demo_episodes: 2,
        eval_every: 60,
        eval_episodes: 2,
        heldout_episodes: 2,
        ..common::small_pixel_config()
    };
    cfg.bc.steps = 40;
    cfg.bc.batch_size = 32;
    cfg.learner.learning_starts = 20;
    cfg.learner.critic_warmup_updates = 10;
    cfg.learner.publish_every = 5;
    let s = train(&cfg, &dir, false, |_| {}).unwrap();
    assert!(s.env_steps >= 120, "{} steps", s.env_steps);
    assert!(s.updates >= 40, "{} updates", s.updates);
    assert_eq!(s.demo_episodes, 2);
    let held = s.heldout.as_ref().expect("a held-out evaluation");
    assert_eq!(held.episodes, 2);
    // Every step of the demonstrations and of training is in the replay, once.
    assert!(
        s.replay_records > s.env_steps,
        "{} records",
        s.replay_records
    );
    for f in [
        "base.safetensors",
        "base_encoder.safetensors",
        "policy.safetensors",
        "summary.json",
        "metrics.csv",
        "curve.png",
        "config.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // The critics' gradient moved the encoder away from the base's, where it started.
    let base = reflex_policy::ConvEncoder::load(&dir.join("base_encoder.safetensors")).unwrap();
    let trained =
        reflex_policy::ConvEncoder::load(&dir.join("policy_encoder.safetensors")).unwrap();
    assert_eq!(base.shape(), trained.shape());
    assert_ne!(base.params(), trained.params());
    let rows = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(rows.lines().count() >= 3, "{rows}");
    // `reflex eval` of the run's files replays the held-out evaluation exactly.
    let (success, ret) = reflex_jobs::train::evaluate_run(&dir, None, None, 2, None).unwrap();
    assert_eq!(success, held.success_rate);
    assert!(
        (ret - held.mean_return).abs() < 1e-6,
        "{ret} vs {}",
        held.mean_return
    );
    // `reflex study` reads a pixel run as it reads one on state: its curve has every evaluation.
    let st = reflex_jobs::train::study(std::slice::from_ref(&dir), &dir.join("study")).unwrap();
    assert_eq!(st.runs.len(), 1);
    assert_eq!(st.runs[0].heldout_success_rate, Some(held.success_rate));
    assert!(dir.join("study").join("band.png").exists());
    // `--resume` continues from the replay's log and the agent's checkpoint: no new
    // demonstrations or cloning, every step kept, the updates and episodes counted on.
    assert!(dir.join("checkpoints").read_dir().unwrap().count() > 0);
    let more = TrainConfig {
        max_env_steps: 180,
        ..cfg.clone()
    };
    let mut stages = Vec::new();
    let r = train(&more, &dir, true, |p| {
        if let reflex_jobs::train::Progress::Stage(name) = p {
            stages.push(name);
        }
    })
    .unwrap();
    assert!(
        !stages.contains(&"demonstrations") && !stages.contains(&"behaviour cloning"),
        "{stages:?}"
    );
    assert!(r.env_steps >= 180, "{} steps", r.env_steps);
    // The agent came back from its checkpoint: its updates count on from the first run's.
    assert!(
        r.updates >= s.updates + 40,
        "{} then {}",
        s.updates,
        r.updates
    );
    assert!(
        r.episodes > s.episodes,
        "{} then {}",
        s.episodes,
        r.episodes
    );
    assert!(
        r.replay_records > s.replay_records,
        "{} then {} records",
        s.replay_records,
        r.replay_records
    );
    let rows = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(rows.lines().count() >= 4, "{rows}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// HIL-SERL's recipe from pixels: a run from pixels whose reward and episode ends come from a
/// success classifier (`terminate`). At threshold 0 every frame is a success, so each training
/// episode ends one step after its first verdict and every training step earns the success
/// reward; the stage's counters are in the summary. `vlm-preference` (a model over state rows)
/// is refused by name.
#[test]
fn a_run_from_pixels_takes_its_reward_and_its_ends_from_a_success_classifier() {
    use reflex_classifier::classifier_stage::{classifier_plugin, ClassifierStageConfig};
    let dir = std::env::temp_dir().join(format!("reflex-train-pixels-clf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let task = Task::load("pick_cube").unwrap();
    let frames = reflex_jobs::classifier::collect_frames(&task, 3, 40, 16, 4).unwrap();
    let clf_cfg = reflex_classifier::ClassifierConfig {
        epochs: 1,
        batch: 16,
        ..Default::default()
    };
    let (clf, _) = reflex_classifier::train(&frames, "pick_cube", &clf_cfg, |_, _| {}).unwrap();
    let stage_cfg = ClassifierStageConfig {
        terminate: true,
        threshold: Some(0.0),
        ..Default::default()
    };
    let plugin = classifier_plugin(clf, stage_cfg).unwrap();
    let mut cfg = TrainConfig {
        max_env_steps: 60,
        demo_episodes: 2,
        eval_every: 1000,
        eval_episodes: 1,
        heldout_episodes: 1,
        ..common::small_pixel_config()
    };
    cfg.bc.steps = 20;
    cfg.bc.batch_size = 32;
    cfg.learner.learning_starts = 20;
    cfg.learner.critic_warmup_updates = 5;
    let s = reflex_jobs::train::train_with(&cfg, &dir, false, Some(plugin), |_| {}).unwrap();
    assert_eq!(s.reward, "classifier");
    assert!(s.env_steps >= 60, "{} steps", s.env_steps);
    let c = &s.reward_stage.as_ref().expect("the stage's counters")["classifier"];
    let count = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}: {c}"));
    // Every training episode is two steps long, ended by the classifier and confirmed.
    assert!(
        s.episodes >= 25 && count("episodes_ended") + 1 >= s.episodes,
        "{} episodes: {c}",
        s.episodes
    );
    assert_eq!(count("ends_confirmed"), count("episodes_ended"), "{c}");
    // Every stored training step was judged, and judged a success.
    assert!(count("rewarded") >= s.env_steps, "{c}");
    assert_eq!(count("judged_success"), count("rewarded"), "{c}");
    assert!(s.heldout.is_some());

    let mut pref = reflex_learn::stage::sparse_plugin(10.0);
    pref.name = "vlm-preference".into();
    let err = reflex_jobs::train::train_with(&cfg, &dir, false, Some(pref), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("vlm-preference"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run from pixels whose demonstrations come from a recorded teleop session
/// (`demo_sessions`), not from the scripted expert: the path of an arm with no object tracker;
/// and a run on state from the same session.
/// The session's successful episodes are cloned and stored, step for step, with their frames;
/// an episode the operator labelled a failure is left out; a session without a camera the
/// run asks for, of another task or with an observation of another width is refused, naming
/// its file.
#[test]
fn a_run_from_pixels_clones_its_base_from_a_recorded_sessions_successes() {
    use reflex_jobs::teleop::record::{read_recording, RECORDING};
    use reflex_jobs::teleop::TeleopSession;
    use std::time::{Duration, Instant};
    let root = std::env::temp_dir().join(format!("reflex-px-sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let session_dir = root.join("session");
    let spec = common::scripted_session(Task::load("reach").unwrap(), 90, &session_dir, 1);
    let session = TeleopSession::start(&spec).unwrap();
    let started = Instant::now();
    session
        .run_until(|s| s.episodes().len() >= 4 || started.elapsed() > Duration::from_secs(60))
        .unwrap();
    // The operator labelled the first episode a failure: it must not be cloned.
    let path = session_dir.join(RECORDING);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[0]["success"] = false.into();
    let write = |p: &std::path::Path, lines: &[serde_json::Value]| {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(p, body).unwrap();
    };
    write(&path, &lines);
    let (_, recorded) = read_recording(&session_dir).unwrap();
    assert!(recorded.len() >= 4, "{} episodes", recorded.len());
    let good: Vec<_> = recorded.iter().filter(|e| e.success).collect();
    assert!(good.len() >= 2, "{} successes", good.len());
    let steps: usize = good.iter().map(|e| e.actions.len()).sum();

    let dir = root.join("run");
    let mut cfg = TrainConfig {
        task: "reach".into(),
        max_env_steps: 40,
        demo_episodes: 7,
        eval_every: 40,
        eval_episodes: 1,
        heldout_episodes: 1,
        ..common::small_pixel_config()
    };
    cfg.demo_sessions = vec![session_dir.clone()];
    cfg.bc.steps = 20;
    cfg.learner.learning_starts = 10;
    cfg.learner.critic_warmup_updates = 5;
    let s = train(&cfg, &dir, false, |_| {}).unwrap();
    let from = s.demo_sessions.as_ref().expect("the sessions' report");
    assert_eq!(from.episodes, recorded.len());
    assert_eq!((from.used, from.steps), (good.len(), steps));
    assert_eq!(s.demo_episodes, good.len(), "not the 7 scripted ones");
    // Every session step is in the replay beside every training step.
    assert_eq!(
        s.replay_records,
        (steps as u64) + s.env_steps,
        "{} records",
        s.replay_records
    );
    assert!(dir.join("base_encoder.safetensors").exists());
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(text.contains("demo_sessions"), "{text}");

    // Refusals, each naming the file at fault.
    let refused = |cfg: &TrainConfig| {
        train(cfg, &root.join("refused"), false, |_| {})
            .expect_err("refused")
            .to_string()
    };
    let mut other_camera = cfg.clone();
    other_camera.pixels.cameras = vec!["front".into(), "side".into()];
    let err = refused(&other_camera);
    assert!(
        err.contains("header.json") && err.contains("`side`"),
        "{err}"
    );
    let other_task = TrainConfig {
        task: "pick_cube".into(),
        ..cfg.clone()
    };
    let err = refused(&other_task);
    assert!(
        err.contains("header.json") && err.contains("reach"),
        "{err}"
    );
    let narrow = root.join("narrow");
    std::fs::create_dir_all(&narrow).unwrap();
    std::fs::copy(session_dir.join("header.json"), narrow.join("header.json")).unwrap();
    lines[1]["observations"][2].as_array_mut().unwrap().pop();
    write(&narrow.join(RECORDING), &lines);
    let mut bad = cfg.clone();
    bad.demo_sessions = vec![narrow];
    let err = refused(&bad);
    assert!(
        err.contains(RECORDING) && err.contains("episode") && err.contains("step 2"),
        "{err}"
    );
    // A session whose camera stream ended early (its process died before the encoder wrote
    // the frames): the episodes whose frames are there are kept, the rest left out and counted.
    let cut = root.join("cut");
    copy_dir(&session_dir, &cut);
    let front = cut.join("cameras").join("part-000").join("front.mkv");
    let len = std::fs::metadata(&front).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&front)
        .unwrap()
        .set_len(len * 9 / 10)
        .unwrap();
    let mut cut_cfg = cfg.clone();
    cut_cfg.demo_sessions = vec![cut];
    let c = train(&cut_cfg, &root.join("cut-run"), false, |_| {}).unwrap();
    let from = c.demo_sessions.as_ref().expect("the sessions' report");
    assert!(
        from.without_frames >= 1 && from.used + from.without_frames == good.len(),
        "{from:?}"
    );
    assert!(from.used >= 1 && from.steps < steps, "{from:?}");
    // A run on state reads the same successes (no frames needed) as its demonstrations: the
    // base is cloned from what the session did, not from the scripted expert.
    let mut state_cfg = TrainConfig {
        task: "reach".into(),
        max_env_steps: 40,
        demo_episodes: 7,
        eval_every: 40,
        eval_episodes: 1,
        heldout_episodes: 1,
        demo_sessions: vec![session_dir.clone()],
        minutes: 3.0,
        ..TrainConfig::default()
    };
    state_cfg.bc.steps = 200;
    let st = train(&state_cfg, &root.join("state"), false, |_| {}).unwrap();
    let from = st.demo_sessions.as_ref().expect("the sessions' report");
    assert_eq!((from.used, from.steps), (good.len(), steps));
    assert_eq!(st.demo_episodes, good.len());
    let _ = std::fs::remove_dir_all(&root);
}

/// Copies a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
