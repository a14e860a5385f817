//! The keypoint reward stage against the oracle server over real HTTP on loopback: late
//! answers are joined to their own episode (each episode's cube is elsewhere, so a mix-up
//! shows in the rewards), failed answers drop their episode whole, and an answer that comes
//! after the wait limit finds its episode gone.

use nalgebra::Point3;
use reflex_core::{Outcome, Transition};
use reflex_learn::stage::RewardPlugin;
use reflex_reward::keypoint_stage::{keypoint_plugin, KeypointStageConfig};
use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::vlm::{VlmClient, VlmConfig};
use reflex_sim::{Env, Task};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setup(
    oracle: OracleConfig,
    tweak: impl FnOnce(&mut KeypointStageConfig),
) -> (Oracle, Env, RewardPlugin) {
    let server = Oracle::start("127.0.0.1:0".parse().unwrap(), oracle).unwrap();
    let client = VlmClient::start(VlmConfig {
        base_url: server.base_url(),
        timeout_s: 5.0,
        max_retries: 0,
        ..Default::default()
    })
    .unwrap();
    let task = Task::load("pick_cube").unwrap();
    let mut cfg = KeypointStageConfig::default();
    tweak(&mut cfg);
    let plugin = keypoint_plugin(&task.instruction, Arc::new(client), cfg).unwrap();
    (server, Env::new(task).unwrap(), plugin)
}

/// Where the tool is held in these transitions: near every cube start, so that `kp_reach`
/// tells the episodes' cubes apart.
const TOOL: [f64; 3] = [0.45, 0.0, 0.08];

/// `n` transitions of episode `episode`, all seeing `env`'s current scene with the tool at
/// [`TOOL`]; the last ends it.
fn transitions(env: &Env, episode: u64, n: u64) -> Vec<Transition> {
    let mut flat = env.observation().flat.as_slice().to_vec();
    for (d, v) in flat[14..17].iter_mut().zip(TOOL) {
        *d = v as f32;
    }
    let mut obs = reflex_core::FlatObs::default();
    obs.extend_from(&flat);
    (0..n)
        .map(|step| {
            let mut t = Transition::empty(env.task().action_space);
            t.episode = episode;
            t.step = step;
            t.obs = obs;
            t.next_obs = obs;
            t.outcome = Outcome {
                reward: 0.0,
                truncated: step + 1 == n,
                ..Outcome::PENDING
            };
            t
        })
        .collect()
}

/// What `kp_reach` must be for the tool where it is now and the cube's visible keypoint.
fn expected_reach(env: &Env) -> f64 {
    let o = env.observation();
    let tcp = Point3::from(TOOL);
    let top = Point3::from(o.keypoints_m[1]);
    1.0 - ((tcp - top).norm() / 0.1).tanh()
}

fn drive(plugin: &mut RewardPlugin, until: impl Fn(&[Transition]) -> bool) -> Vec<Transition> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !until(&out) && Instant::now() < deadline {
        plugin.stage.poll(&mut |t| out.push(t));
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

/// Polls the stage (collecting what it passes on) until its keypoint counter `key` reaches
/// `value`, for at most 10 s.
fn poll_until(plugin: &mut RewardPlugin, out: &mut Vec<Transition>, key: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin.stage.report()["keypoints"][key] != value && Instant::now() < deadline {
        plugin.stage.poll(&mut |t| out.push(t));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Three episodes on three cube positions, asked with 300 ms latency: transitions wait for
/// their episode's answer, then come out in step order rewarded from their own episode's plan.
#[test]
fn late_answers_reward_their_own_episode() {
    let (server, mut env, mut plugin) = setup(
        OracleConfig {
            latency: Duration::from_millis(300),
            ..Default::default()
        },
        |_| {},
    );
    let mut expected = Vec::new();
    let mut out = Vec::new();
    for ep in 0..3u64 {
        env.reset(10 + ep).unwrap();
        plugin.hook.episode_started(ep, env.observation(), &env);
        expected.push(expected_reach(&env));
        for t in transitions(&env, ep, 5) {
            plugin.stage.take(t, &mut |t| out.push(t));
        }
    }
    assert!(out.is_empty(), "nothing passes before its answer");
    out.extend(drive(&mut plugin, |o| o.len() >= 15));
    assert_eq!(out.len(), 15);
    let distinct = (0..3).all(|i| (0..i).all(|j| (expected[i] - expected[j]).abs() > 0.025));
    assert!(
        distinct,
        "the scenes must differ for the test to mean anything: {expected:?}"
    );
    for ep in 0..3u64 {
        let mine: Vec<&Transition> = out.iter().filter(|t| t.episode == ep).collect();
        let steps: Vec<u64> = mine.iter().map(|t| t.step).collect();
        assert_eq!(steps, vec![0, 1, 2, 3, 4], "episode {ep} in step order");
        for t in mine {
            let reach = t.outcome.terms.values()[0];
            assert!(
                (reach - expected[ep as usize]).abs() < 0.012,
                "episode {ep}: kp_reach {reach} vs {}",
                expected[ep as usize]
            );
            assert_eq!(
                t.outcome.reward,
                t.outcome.terms.values()[0] + t.outcome.terms.values()[1]
            );
        }
    }
    let r = plugin.stage.report();
    assert_eq!(r["keypoints"]["planned"], 3, "{r}");
    assert_eq!(r["keypoints"]["rewarded"], 15, "{r}");
    assert_eq!(r["held_now"], 0, "{r}");
    server.stop();
}

/// Every answer fails (HTTP 500, no retries): every transition is dropped and counted, none
/// passes with a reward it did not earn.
#[test]
fn failed_answers_drop_their_episode() {
    let (server, mut env, mut plugin) = setup(
        OracleConfig {
            error_rate: 1.0,
            ..Default::default()
        },
        |_| {},
    );
    let mut out = Vec::new();
    for ep in 0..2u64 {
        env.reset(ep).unwrap();
        plugin.hook.episode_started(ep, env.observation(), &env);
        for t in transitions(&env, ep, 4) {
            plugin.stage.take(t, &mut |t| out.push(t));
        }
    }
    poll_until(&mut plugin, &mut out, "failed_answers", 2);
    let r = plugin.stage.report();
    assert!(out.is_empty(), "{} passed", out.len());
    assert_eq!(r["keypoints"]["failed_answers"], 2, "{r}");
    assert_eq!(r["keypoints"]["dropped"], 8, "{r}");
    assert_eq!(r["held_now"], 0, "{r}");
    server.stop();
}

/// An answer slower than the wait limit: the episode expires, its transitions are dropped,
/// and the answer, when it comes, is counted as late and rewards nothing.
#[test]
fn an_answer_after_the_wait_limit_is_ignored() {
    let (server, mut env, mut plugin) = setup(
        OracleConfig {
            latency: Duration::from_millis(600),
            ..Default::default()
        },
        |c| c.max_wait_s = 0.2,
    );
    env.reset(3).unwrap();
    plugin.hook.episode_started(0, env.observation(), &env);
    let mut out = Vec::new();
    for t in transitions(&env, 0, 6) {
        plugin.stage.take(t, &mut |t| out.push(t));
    }
    poll_until(&mut plugin, &mut out, "late_replies", 1);
    let r = plugin.stage.report();
    assert!(out.is_empty());
    assert_eq!(r["keypoints"]["expired"], 1, "{r}");
    assert_eq!(r["keypoints"]["late_replies"], 1, "{r}");
    assert_eq!(r["keypoints"]["dropped"], 6, "{r}");
    server.stop();
}
