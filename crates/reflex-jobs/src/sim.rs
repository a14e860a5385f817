//! `reflex sim`: the scripted expert in the simulator, episodes in parallel (one world per
//! rayon thread), optionally saving camera frames, with the success rate and mean return.

use rayon::prelude::*;
use reflex_core::{Action, Frame, Policy};
use reflex_sim::{Camera, Env, ScriptedExpert, SimError, Task, Termination};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimSpec {
    /// The task.
    pub task: Task,
    /// Episodes.
    pub episodes: u64,
    /// Seed of the first episode; episode i uses `seed + i`.
    pub seed: u64,
    /// Save the front and wrist cameras' frames of every step here.
    pub save_frames: Option<PathBuf>,
    /// Side of the saved frames, pixels.
    pub frame_size: usize,
}

/// What the episodes did (`reflex sim --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    /// Task.
    pub task: String,
    /// The policy (`scripted`).
    pub policy: String,
    /// Episodes run.
    pub episodes: usize,
    /// Seed of the first.
    pub seed: u64,
    /// Share that succeeded.
    pub success_rate: f64,
    /// How many succeeded.
    pub successes: usize,
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Mean length, policy steps.
    pub mean_steps: f64,
    /// Episodes ended by a non-finite physics state.
    pub faults: usize,
    /// Wall-clock time, seconds.
    pub wall_s: f64,
}

fn sim_text(e: &SimError) -> String {
    format!("simulator: {e}")
}

#[derive(Clone, Copy, Default)]
struct EpisodeResult {
    success: bool,
    ret: f64,
    steps: u32,
    fault: bool,
}

/// Runs `spec`; `episode_done` is called as each episode finishes (from the worker threads).
/// Errors name the stage (`simulator: ...`, the frames directory).
pub fn run_sim(spec: &SimSpec, episode_done: impl Fn() + Sync) -> Result<SimReport, String> {
    let task = &spec.task;
    if let Some(dir) = &spec.save_frames {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let sim = |e: SimError| format!("simulator: {e}");
    let template = Env::new(task.clone()).map_err(sim)?.template().clone();
    let start = Instant::now();
    let results: Result<Vec<EpisodeResult>, String> = (0..spec.episodes)
        .into_par_iter()
        .map_init(
            || Env::from_template(task.clone(), template.clone()),
            |env, ep| {
                let env = env.as_mut().map_err(|e| sim_text(e))?;
                let r = run_episode(env, spec, spec.seed + ep, ep).map_err(|e| sim_text(&e));
                episode_done();
                r
            },
        )
        .collect();
    let results = results?;
    let n = results.len().max(1) as f64;
    let successes = results.iter().filter(|r| r.success).count();
    Ok(SimReport {
        task: task.name.clone(),
        policy: "scripted".into(),
        episodes: results.len(),
        seed: spec.seed,
        success_rate: successes as f64 / n,
        successes,
        mean_return: results.iter().map(|r| r.ret).sum::<f64>() / n,
        mean_steps: results.iter().map(|r| f64::from(r.steps)).sum::<f64>() / n,
        faults: results.iter().filter(|r| r.fault).count(),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn run_episode(
    env: &mut Env,
    spec: &SimSpec,
    seed: u64,
    ep: u64,
) -> Result<EpisodeResult, SimError> {
    let task = &spec.task;
    let mut policy = ScriptedExpert::new(task, env.model());
    policy.reset();
    let mut obs = env.reset(seed)?;
    let mut action = Action::zeros(task.action_space);
    let cameras = [
        Camera::front(spec.frame_size, spec.frame_size),
        Camera::wrist(spec.frame_size, spec.frame_size),
    ];
    let mut frame = Frame::new(spec.frame_size, spec.frame_size);
    let mut result = EpisodeResult::default();
    for t in 0.. {
        if let Some(dir) = &spec.save_frames {
            for cam in &cameras {
                env.render(cam, &mut frame, false);
                reflex_sim::save_png(&frame, dir, &format!("ep{ep:03}_t{t:03}_{}", cam.name))?;
            }
        }
        policy.act(&obs, &mut action);
        let step = env.step(&action)?;
        obs = step.obs;
        result.ret += step.reward;
        result.steps += 1;
        result.success |= step.info.success;
        if step.terminated || step.truncated {
            result.fault = step.info.termination == Some(Termination::NonFinite);
            break;
        }
    }
    Ok(result)
}
