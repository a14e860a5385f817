//! `reflex export lerobot`: recorded teleop sessions as a LeRobot dataset (built with the
//! `lerobot` feature; the videos need the system's ffmpeg).

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Arguments of `reflex export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    format: Format,
}

#[derive(Subcommand)]
enum Format {
    /// A LeRobot dataset (layout v3.0): parquet frames and episodes, AV1 videos per camera,
    /// `meta/info.json`, stats and tasks.
    Lerobot(LerobotArgs),
}

#[derive(Args)]
struct LerobotArgs {
    /// Session directories (`reflex teleop --out`), exported in this order.
    #[arg(required = true)]
    sessions: Vec<PathBuf>,
    /// The dataset's directory (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// `robot_type` in `meta/info.json`.
    #[arg(long, default_value = "reflex_sim_arm")]
    robot_type: String,
    /// Export only the episodes that ended in success (the task's, or the operator's label).
    #[arg(long)]
    only_successes: bool,
    /// Print a JSON report as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    match &a.format {
        Format::Lerobot(l) => lerobot(l),
    }
}

#[cfg(feature = "lerobot")]
fn lerobot(a: &LerobotArgs) -> Result<()> {
    let spec = reflex_jobs::export::ExportSpec {
        sessions: a.sessions.clone(),
        out: a.out.clone(),
        robot_type: a.robot_type.clone(),
        only_successes: a.only_successes,
    };
    let bar = indicatif::ProgressBar::new_spinner();
    let r = reflex_jobs::export::export_lerobot(&spec, |what| bar.set_message(what.to_string()))?;
    bar.finish_and_clear();
    println!(
        "{}: {} episodes, {} frames at {} fps, {} task(s), cameras {:?}; data {} KB, videos {} KB{}",
        a.out.display(),
        r.episodes,
        r.frames,
        r.fps,
        r.tasks,
        r.cameras,
        r.data_bytes / 1024,
        r.video_bytes / 1024,
        if r.skipped > 0 {
            format!("; {} episodes left out", r.skipped)
        } else {
            String::new()
        }
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

#[cfg(not(feature = "lerobot"))]
fn lerobot(_: &LerobotArgs) -> Result<()> {
    anyhow::bail!(
        "reflex export lerobot: this reflex was built without the `lerobot` feature (parquet); build it with `cargo build --release -p reflex-cli --features lerobot`"
    )
}
