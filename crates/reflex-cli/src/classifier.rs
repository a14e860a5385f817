//! `reflex classifier train` and `reflex classifier eval`: the success classifier on simulated
//! camera frames.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reflex_classifier::{train, Classifier, ClassifierConfig};
use reflex_jobs::classifier::collect_frames;
use std::path::PathBuf;
use std::time::Instant;

/// What `reflex classifier` does.
#[derive(Subcommand)]
pub enum ClassifierCommand {
    /// Collect labelled frames in the simulator, train the CNN, report held-out accuracy.
    Train(TrainArgs),
    /// Accuracy of a trained classifier on fresh simulated frames.
    Eval(EvalArgs),
}

/// Arguments of `reflex classifier train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Task name or file.
    #[arg(long, default_value = "pick_cube")]
    task: String,
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
    /// Print the result as a JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Frames that run on after a success (the expert holding the result).
const AFTER_SUCCESS: usize = 8;

pub fn run(cmd: &ClassifierCommand) -> Result<()> {
    match cmd {
        ClassifierCommand::Train(a) => run_train(a),
        ClassifierCommand::Eval(a) => run_eval(a),
    }
}

fn run_train(a: &TrainArgs) -> Result<()> {
    if a.episodes == 0 || a.heldout_episodes == 0 {
        bail!("--episodes and --heldout-episodes must be positive");
    }
    let started = Instant::now();
    let task = reflex_sim::Task::load(&a.task).with_context(|| format!("--task {}", a.task))?;
    let seed0 = a.seed.wrapping_mul(1_000_003);
    let frames = collect_frames(&task, a.episodes, seed0, a.size, AFTER_SUCCESS)?;
    let heldout = collect_frames(
        &task,
        a.heldout_episodes,
        seed0 + a.episodes as u64 + 11,
        a.size,
        AFTER_SUCCESS,
    )?;
    eprintln!(
        "{} training frames ({} positive), {} held-out ({} positive)",
        frames.len(),
        frames.positives(),
        heldout.len(),
        heldout.positives()
    );
    let cfg = ClassifierConfig {
        epochs: a.epochs,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let bar = ProgressBar::new(a.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (clf, loss) = train(&frames, &a.task, &cfg, |epoch, loss| {
        bar.set_position(epoch as u64 + 1);
        bar.set_message(format!("loss {loss:.4}"));
    })?;
    bar.finish_and_clear();
    let train_acc = clf.evaluate(&frames)?;
    let test_acc = clf.evaluate(&heldout)?;
    clf.save(&a.out)?;
    let report = serde_json::json!({
        "task": a.task,
        "size": a.size,
        "epochs": a.epochs,
        "final_loss": loss,
        "train": train_acc,
        "heldout": test_acc,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let path = a.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| path.display().to_string())?;
    println!(
        "{}: held-out accuracy {:.1}% on {} frames (positives {:.1}%, negatives {:.1}%); training frames {:.1}%; {:.0} s; saved in {}",
        a.task,
        100.0 * test_acc.accuracy,
        test_acc.frames,
        100.0 * test_acc.true_positive_rate,
        100.0 * test_acc.true_negative_rate,
        100.0 * train_acc.accuracy,
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    if a.json {
        println!("{report}");
    }
    Ok(())
}

fn run_eval(a: &EvalArgs) -> Result<()> {
    if a.episodes == 0 {
        bail!("--episodes must be positive");
    }
    let clf = Classifier::load(&a.model)?;
    let name = a.task.clone().unwrap_or_else(|| clf.meta.task.clone());
    let task = reflex_sim::Task::load(&name).with_context(|| format!("task {name}"))?;
    let frames = collect_frames(&task, a.episodes, a.seed, clf.meta.size, AFTER_SUCCESS)?;
    let acc = clf.evaluate(&frames)?;
    println!(
        "{}: accuracy {:.1}% on {} frames ({} positive; positives {:.1}%, negatives {:.1}%)",
        a.model.display(),
        100.0 * acc.accuracy,
        acc.frames,
        acc.positives,
        100.0 * acc.true_positive_rate,
        100.0 * acc.true_negative_rate
    );
    if a.json {
        println!("{}", serde_json::to_string(&acc)?);
    }
    Ok(())
}
