//! The preference plugin's two halves driven by hand against the oracle server over real HTTP
//! on loopback: frames of noisy scripted episodes go into the pool, a round of pairs is asked,
//! the answers train the model, and the potential it hands the learner ranks states by the
//! task's progress. With a server that only fails, nothing is labelled, no potential appears,
//! and transitions still pass with their sparse reward.

use reflex_core::Rng;
use reflex_core::{Outcome, RewardTerms, Transition};
use reflex_learn::stage::RewardPlugin;
use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::preference::spearman;
use reflex_reward::preference_stage::{preference_plugin, PreferenceStageConfig};
use reflex_reward::vlm::{VlmClient, VlmConfig};
use reflex_sim::{noisy_expert_episodes, Task};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setup(oracle: OracleConfig) -> (Oracle, RewardPlugin) {
    let server = Oracle::start("127.0.0.1:0".parse().unwrap(), oracle).unwrap();
    let client = VlmClient::start(VlmConfig {
        base_url: server.base_url(),
        timeout_s: 5.0,
        max_retries: 0,
        ..Default::default()
    })
    .unwrap();
    let cfg = PreferenceStageConfig {
        width: 48,
        height: 36,
        frame_every: 2,
        round_every: 250,
        pairs_per_round: 150,
        max_labels: 150,
        round_timeout_s: 20.0,
        ..Default::default()
    };
    let task = Task::load("pick_cube").unwrap();
    let plugin = preference_plugin(&task.instruction, Arc::new(client), cfg).unwrap();
    (server, plugin)
}

/// Runs 10 noisy expert episodes through the hook (the stage polled as a learner would);
/// returns the flat observations seen and the task's reward at each.
fn drive(plugin: &mut RewardPlugin) -> (Vec<f32>, Vec<f64>, usize) {
    let task = Task::load("pick_cube").unwrap();
    let mut rng = Rng::new(5);
    let (mut rows, mut progress) = (Vec::new(), Vec::new());
    let mut passed = 0usize;
    let mut step = 0u64;
    let mut current = usize::MAX;
    noisy_expert_episodes(&task, 10, 300, &mut rng, |ep, env, s| {
        if ep != current {
            current = ep;
            step = 0;
        }
        let outcome = Outcome {
            reward: s.reward,
            terms: RewardTerms::new(0),
            success: s.info.success,
            terminated: s.terminated,
            truncated: s.truncated,
        };
        plugin
            .hook
            .step_judged(ep as u64, step, &outcome, &s.obs, env);
        let mut t = Transition::empty(task.action_space);
        t.episode = ep as u64;
        t.step = step;
        t.outcome = outcome;
        plugin.stage.take(t, &mut |r| {
            // Only the sparse part passes: the success, never the task's shaped reward.
            assert_eq!(r.outcome.reward, if r.outcome.success { 10.0 } else { 0.0 });
            passed += 1;
        });
        plugin.stage.poll(&mut |_| panic!("nothing is held"));
        rows.extend_from_slice(s.obs.flat.as_slice());
        progress.push(s.reward);
        step += 1;
        Ok(!(s.terminated || s.truncated))
    })
    .unwrap();
    (rows, progress, passed)
}

fn poll_until(
    plugin: &mut RewardPlugin,
    limit: Duration,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) {
    let t0 = Instant::now();
    loop {
        plugin.stage.poll(&mut |_| {});
        if done(&plugin.stage.report()) {
            return;
        }
        assert!(t0.elapsed() < limit, "{}", plugin.stage.report());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_round_of_labels_gives_a_potential_that_ranks_progress() {
    let (server, mut plugin) = setup(OracleConfig::default());
    let (rows, progress, passed) = drive(&mut plugin);
    assert_eq!(passed, progress.len());
    poll_until(&mut plugin, Duration::from_secs(30), |r| {
        r["rounds"].as_array().is_some_and(|a| !a.is_empty())
    });
    let report = plugin.stage.report();
    let p = &report["preference"];
    assert_eq!(p["asked"], 150, "{report}");
    assert!(p["labels"].as_u64().unwrap() >= 140, "{report}");
    assert_eq!(p["failed"], 0, "{report}");
    assert!(
        plugin.stage.relabel_due(),
        "a finished round asks for a reshape"
    );
    assert!(!plugin.stage.relabel_due(), "once");
    let mut phi = vec![0.0f32; progress.len()];
    plugin.stage.potential(&rows, &mut phi);
    let phi: Vec<f64> = phi.into_iter().map(f64::from).collect();
    let rho = spearman(&phi, &progress);
    eprintln!("potential vs task reward: Spearman {rho}");
    assert!(rho > 0.6, "potential vs task reward: Spearman {rho}");
    // Bounded: the model's output is clipped to 3 standard deviations, times the weight (2).
    assert!(phi.iter().all(|v| v.abs() <= 6.0 + 1e-4));
    server.stop();
}

#[test]
fn a_failing_server_labels_nothing_and_training_goes_on() {
    let (server, mut plugin) = setup(OracleConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    let (rows, progress, passed) = drive(&mut plugin);
    assert_eq!(passed, progress.len(), "transitions never wait for labels");
    poll_until(&mut plugin, Duration::from_secs(30), |r| {
        r["preference"]["failed"].as_u64() == Some(150)
    });
    let report = plugin.stage.report();
    assert_eq!(report["preference"]["labels"], 0, "{report}");
    assert!(!plugin.stage.relabel_due());
    let mut phi = vec![1.0f32; progress.len()];
    plugin.stage.potential(&rows, &mut phi);
    assert!(phi.iter().all(|v| *v == 0.0), "no model, no shaping");
    server.stop();
}
