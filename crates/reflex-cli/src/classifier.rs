//! `reflex classifier train` and `reflex classifier eval`: arguments and reports; the jobs are
//! `reflex_jobs::classifier`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reflex_jobs::classifier::{eval_classifier, train_classifier, ClassifierTrainSpec};
use std::path::PathBuf;

/// What `reflex classifier` does.
#[derive(Subcommand)]
pub enum ClassifierCommand {
    /// Collect labelled frames (in the simulator, or from recorded sessions), train the CNN,
    /// report held-out accuracy.
    Train(TrainArgs),
    /// Accuracy of a trained classifier on fresh simulated frames.
    Eval(EvalArgs),
}

/// Arguments of `reflex classifier train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Task name or file [default: pick_cube, or the task the --sessions ran].
    #[arg(long)]
    task: Option<String>,
    /// Learn from these recorded sessions (`reflex teleop --record DIR`, with frames) instead
    /// of the simulator: the last --positive-last frames of each successful episode are
    /// successes, every other frame not; every fifth episode is held out.
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<PathBuf>,
    /// With --sessions: the recorded camera to learn from.
    #[arg(long, default_value = "front")]
    camera: String,
    /// With --sessions: frames at the end of a successful episode labelled success
    /// [default: each session's `--success-hold` plus one, the frames of the finished scene].
    #[arg(long)]
    positive_last: Option<usize>,
    /// Episodes whose frames train the classifier.
    #[arg(long, default_value_t = 60)]
    episodes: usize,
    /// Episodes whose frames only test it.
    #[arg(long, default_value_t = 20)]
    heldout_episodes: usize,
    /// Image side, pixels (a multiple of 8: 64 or 128).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Passes over the training frames.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Adam step size.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of episodes, weights and batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the network trains: `cpu`, or `gpu` (burn's wgpu backend; a build with
    /// `--features gpu`). The saved classifier runs on any build.
    #[arg(long, default_value = "cpu")]
    device: reflex_learn::burn_device::BurnDevice,
    /// Output directory (classifier.safetensors, classifier.json, report.json).
    #[arg(long, default_value = "runs/classifier")]
    out: PathBuf,
    /// Print the report as a JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex classifier eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Directory written by `reflex classifier train`.
    #[arg(long)]
    model: PathBuf,
    /// Task name or file [default: the one it was trained on].
    #[arg(long)]
    task: Option<String>,
    /// Episodes to judge.
    #[arg(long, default_value_t = 20)]
    episodes: usize,
    /// Seed of the episodes (pick one the training did not use).
    #[arg(long, default_value_t = 1_000_000)]
    seed: u64,
    /// Also replay `[reward.classifier_stage] terminate` on the episodes with each of these
    /// `end_after` windows (consecutive success verdicts that end an episode).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    end_after: Vec<usize>,
    /// Print the result as a JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &ClassifierCommand) -> Result<()> {
    match cmd {
        ClassifierCommand::Train(a) => run_train(a),
        ClassifierCommand::Eval(a) => run_eval(a),
    }
}

fn run_train(a: &TrainArgs) -> Result<()> {
    let name = match (&a.task, a.sessions.first()) {
        (Some(t), _) => t.clone(),
        (None, Some(dir)) => {
            reflex_jobs::teleop::record::read_recording(dir)
                .map_err(|e| anyhow::anyhow!("--sessions {}: {e}", dir.display()))?
                .0
                .task
        }
        (None, None) => "pick_cube".to_owned(),
    };
    let task = reflex_sim::Task::load(&name).with_context(|| format!("--task {name}"))?;
    let spec = ClassifierTrainSpec {
        task,
        sessions: a.sessions.clone(),
        camera: a.camera.clone(),
        positive_last: a.positive_last,
        episodes: a.episodes,
        heldout_episodes: a.heldout_episodes,
        size: a.size,
        epochs: a.epochs,
        lr: a.lr,
        seed: a.seed,
        out: a.out.clone(),
        device: a.device,
    };
    let bar = ProgressBar::new(a.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let r = train_classifier(&spec, |epoch, loss| {
        bar.set_position(epoch as u64 + 1);
        bar.set_message(format!("loss {loss:.4}"));
    })?;
    bar.finish_and_clear();
    println!(
        "{}: held-out accuracy {:.1}% on {} frames (positives {:.1}%, negatives {:.1}%); training frames {:.1}% ({} frames, {} positive); {:.0} s; saved in {}",
        r.task,
        100.0 * r.heldout.accuracy,
        r.heldout.frames,
        100.0 * r.heldout.true_positive_rate,
        100.0 * r.heldout.true_negative_rate,
        100.0 * r.train.accuracy,
        r.train_frames,
        r.train_positives,
        r.wall_s,
        a.out.display()
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

fn run_eval(a: &EvalArgs) -> Result<()> {
    let r = eval_classifier(
        &a.model,
        a.task.as_deref(),
        a.episodes,
        a.seed,
        &a.end_after,
    )?;
    let acc = r.frames;
    println!(
        "{}: accuracy {:.1}% on {} frames ({} positive; positives {:.1}%, negatives {:.1}%)",
        a.model.display(),
        100.0 * acc.accuracy,
        acc.frames,
        acc.positives,
        100.0 * acc.true_positive_rate,
        100.0 * acc.true_negative_rate
    );
    if let Some(first) = r.ends.first() {
        println!(
            "ending episodes on its word ({} episodes, {} succeeded; scripted expert at five noise levels):",
            first.episodes, first.successes
        );
        println!("  end_after  ended  false ends  caught by next frame  true ends denied  missed successes  delay (steps)");
        for e in &r.ends {
            println!(
                "  {:>9}  {:>5}  {:>10}  {:>20}  {:>16}  {:>16}  {:>13.1}",
                e.window,
                e.ended,
                e.false_ends,
                e.false_ends_caught,
                e.true_ends_denied,
                e.missed,
                e.mean_delay_steps
            );
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
