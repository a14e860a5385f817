//! `reflex sim`: seeded episodes of a policy in a task, run in parallel, with a success summary.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use reflex_core::{Action, Policy};
use reflex_sim::{Camera, Env, Frame, ScriptedExpert, Task, Termination};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `reflex sim`.
#[derive(Args)]
pub struct SimArgs {
    /// Task name (from sim/tasks) or path to a task file.
    #[arg(long)]
    task: String,
    /// Policy to run: `scripted` (the task's scripted expert).
    #[arg(long, default_value = "scripted")]
    policy: String,
    /// Number of episodes; episode i uses seed `seed + i`.
    #[arg(long, default_value_t = 10)]
    episodes: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write front and wrist camera frames (RGB, depth, segmentation PNGs) of every step here.
    #[arg(long)]
    save_frames: Option<PathBuf>,
    /// Camera resolution for saved frames, pixels (square).
    #[arg(long, default_value_t = 128)]
    frame_size: usize,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Default)]
struct EpisodeResult {
    success: bool,
    ret: f64,
    steps: u32,
    fault: bool,
}

pub fn run(args: &SimArgs) -> Result<()> {
    if args.policy != "scripted" {
        bail!(
            "--policy {}: only `scripted` is available until trained policies land (reflex train)",
            args.policy
        );
    }
    let task = Task::load(&args.task).with_context(|| format!("loading task {}", args.task))?;
    if let Some(dir) = &args.save_frames {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let template_env = Env::new(task.clone()).context("building the simulator")?;
    let template = template_env.template().clone();
    let bar = ProgressBar::new(args.episodes);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} episodes [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let results: Result<Vec<EpisodeResult>> = (0..args.episodes)
        .into_par_iter()
        .map_init(
            || Env::from_template(task.clone(), template.clone()),
            |env, ep| {
                let env = env.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                let r = run_episode(env, &task, args, args.seed + ep, ep);
                bar.inc(1);
                r
            },
        )
        .collect();
    bar.finish_and_clear();
    let results = results?;
    let wall_s = start.elapsed().as_secs_f64();
    let n = results.len().max(1) as f64;
    let successes = results.iter().filter(|r| r.success).count();
    let success_rate = successes as f64 / n;
    let mean_return = results.iter().map(|r| r.ret).sum::<f64>() / n;
    let mean_steps = results.iter().map(|r| r.steps as f64).sum::<f64>() / n;
    let faults = results.iter().filter(|r| r.fault).count();
    println!(
        "{}: {}/{} episodes succeeded ({:.1}%), mean return {:.2}, mean length {:.1} steps, {} faults, {:.1} s",
        task.name,
        successes,
        results.len(),
        100.0 * success_rate,
        mean_return,
        mean_steps,
        faults,
        wall_s
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "task": task.name,
                "policy": args.policy,
                "episodes": results.len(),
                "seed": args.seed,
                "success_rate": success_rate,
                "successes": successes,
                "mean_return": mean_return,
                "mean_steps": mean_steps,
                "faults": faults,
                "wall_s": wall_s,
            })
        );
    }
    Ok(())
}

fn run_episode(
    env: &mut Env,
    task: &Task,
    args: &SimArgs,
    seed: u64,
    ep: u64,
) -> Result<EpisodeResult> {
    let mut policy = ScriptedExpert::new(task, env.model());
    policy.reset();
    let mut obs = env.reset(seed)?;
    let mut action = Action::zeros(task.action_space);
    let cameras = [
        Camera::front(args.frame_size, args.frame_size),
        Camera::wrist(args.frame_size, args.frame_size),
    ];
    let mut frame = Frame::new(args.frame_size, args.frame_size);
    let mut result = EpisodeResult::default();
    for t in 0.. {
        if let Some(dir) = &args.save_frames {
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
