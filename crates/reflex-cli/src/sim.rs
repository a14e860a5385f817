//! `reflex sim`: arguments and the report; the episodes are `reflex_jobs::sim` (seeded, in
//! parallel, with a success summary).

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reflex_jobs::sim::{run_sim, SimSpec};
use reflex_sim::Task;
use std::path::PathBuf;

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

pub fn run(args: &SimArgs) -> Result<()> {
    if args.policy != "scripted" {
        bail!(
            "--policy {}: only `scripted` is available here (a trained run plays with `reflex eval` or `reflex run`)",
            args.policy
        );
    }
    let task = Task::load(&args.task).with_context(|| format!("loading task {}", args.task))?;
    let spec = SimSpec {
        task,
        episodes: args.episodes,
        seed: args.seed,
        save_frames: args.save_frames.clone(),
        frame_size: args.frame_size,
    };
    let bar = ProgressBar::new(args.episodes);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} episodes [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let r = run_sim(&spec, || bar.inc(1)).map_err(|e| anyhow::anyhow!(e))?;
    bar.finish_and_clear();
    println!(
        "{}: {}/{} episodes succeeded ({:.1}%), mean return {:.2}, mean length {:.1} steps, {} faults, {:.1} s",
        r.task,
        r.successes,
        r.episodes,
        100.0 * r.success_rate,
        r.mean_return,
        r.mean_steps,
        r.faults,
        r.wall_s
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
