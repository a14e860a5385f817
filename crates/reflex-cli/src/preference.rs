//! `reflex preference`: a preference reward model learned from a judge's labels on simulated
//! frames, and how well it ranks held-out frames by true progress.

use anyhow::{bail, Result};
use clap::Args;
use reflex_jobs::preference::{run_preference, ModelInput, PreferenceRunConfig};
use reflex_reward::oracle::OracleConfig;

/// Arguments of `reflex preference`.
#[derive(Args)]
pub struct PreferenceArgs {
    /// Task name or file.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Labels to ask for, at most.
    #[arg(long, default_value_t = 2000)]
    labels: usize,
    /// Rounds the labels come in (the model trains after each).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Episodes whose frames are labelled.
    #[arg(long, default_value_t = 40)]
    episodes: usize,
    /// Episodes whose frames only test the model.
    #[arg(long, default_value_t = 10)]
    heldout_episodes: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What the reward model reads: the state behind each frame (an MLP ensemble) or the
    /// frame itself (a CNN, as RL-VLM-F).
    #[arg(long, default_value = "state")]
    model: ModelInput,
    /// Where the frame model trains: `cpu`, or `gpu` (a build with `--features gpu`).
    #[arg(long, default_value = "cpu")]
    device: reflex_learn::burn_device::BurnDevice,
    /// Base URL of an OpenAI-compatible VLM server. Without it, a built-in oracle answers
    /// from simulator ground truth.
    #[arg(long)]
    vlm_url: Option<String>,
    /// Model name sent to the VLM server.
    #[arg(long)]
    vlm_model: Option<String>,
    /// Chance that the built-in oracle's label is flipped, 0..1.
    #[arg(long, default_value_t = 0.0)]
    oracle_noise: f64,
    /// Print the report as a JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Runs the experiment and prints the result.
pub fn run(a: &PreferenceArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.oracle_noise) {
        bail!("--oracle-noise must be in [0, 1], got {}", a.oracle_noise);
    }
    if a.device == reflex_learn::burn_device::BurnDevice::Gpu
        && a.model != reflex_jobs::preference::ModelInput::Frames
    {
        bail!("--device gpu: only `--model frames` runs in burn; the state model is an MLP on the CPU");
    }
    let (client, oracle) = reflex_jobs::rewards::vlm_client(
        None,
        a.vlm_url.as_deref(),
        a.vlm_model.as_deref(),
        OracleConfig {
            noise: a.oracle_noise,
            seed: a.seed,
            ..Default::default()
        },
        None,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let cfg = PreferenceRunConfig {
        task: a.task.clone(),
        labels: a.labels,
        rounds: a.rounds,
        episodes: a.episodes,
        heldout_episodes: a.heldout_episodes,
        seed: a.seed,
        input: a.model,
        frames_model: reflex_classifier::frame_reward::FrameRewardConfig {
            device: a.device,
            ..Default::default()
        },
        ..Default::default()
    };
    let report = run_preference(&cfg, &client, |r| {
        eprintln!(
            "{:>5} labels: loss {:.3}, Spearman on held-out frames {:.3}",
            r.labels, r.loss, r.spearman_heldout
        );
    })
    .map_err(|e| anyhow::anyhow!("reflex preference: {e}"))?;
    println!(
        "{} ({:?} model): {} labels ({} unsure, {} failed, {} wrong) on {} frames; Spearman with true progress {:.3} held-out ({} frames), {:.3} on labelled frames; {:.1} s",
        report.task,
        report.input,
        report.labels,
        report.unsure,
        report.failed,
        report.wrong_labels,
        report.frames,
        report.spearman_heldout,
        report.heldout_frames,
        report.spearman_train,
        report.wall_s
    );
    if let Some(o) = oracle {
        o.stop();
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
