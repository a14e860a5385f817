//! `reflex firmware-sim`: arguments and the status line; the simulated board itself is
//! `reflex_jobs::firmware_sim`.

use anyhow::{Context, Result};
use clap::Args;
use reflex_jobs::firmware_sim::{FirmwareSim, FirmwareSimSpec};
use reflex_jobs::train::INTERRUPT;
use reflex_sim::Task;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Arguments of `reflex firmware-sim`.
#[derive(Args)]
pub struct FirmwareSimArgs {
    /// Serve on a new pseudo-terminal (the default; its path is printed).
    #[arg(long, conflicts_with = "port")]
    pty: bool,
    /// Serve on this serial device instead (a USB-serial adapter looped to the host, say).
    #[arg(long)]
    port: Option<String>,
    /// Also make this path a symbolic link to the pseudo-terminal (replaced if it is one).
    #[arg(long)]
    link: Option<PathBuf>,
    /// Task name (from sim/tasks) or path to a task file: the arm, its objects and scenes.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Seed of the first scene.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The board's control rate, Hz (the physics steps at it too).
    #[arg(long, default_value_t = 1000)]
    rate: u16,
    /// The board's link watchdog, milliseconds.
    #[arg(long, default_value_t = 50)]
    watchdog_ms: u16,
    /// Where the scene link (tracker poses, resets) listens.
    #[arg(long, default_value = "127.0.0.1:7420")]
    scene: SocketAddr,
    /// Object poses sent per second.
    #[arg(long, default_value_t = 100.0)]
    scene_rate: f64,
    /// Stop after this long, seconds (default: until interrupted).
    #[arg(long)]
    seconds: Option<f64>,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &FirmwareSimArgs) -> Result<()> {
    let _ = a.pty;
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    let spec = FirmwareSimSpec {
        seed: a.seed,
        rate_hz: a.rate,
        watchdog_ms: a.watchdog_ms,
        scene_bind: a.scene,
        scene_rate_hz: a.scene_rate,
        port: a.port.clone(),
        ..FirmwareSimSpec::new(task)
    };
    let sim = FirmwareSim::start(&spec)?;
    if let Some(link) = &a.link {
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(link).with_context(|| format!("replacing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&sim.device, link)
            .with_context(|| format!("linking {} to {}", link.display(), sim.device))?;
    }
    println!(
        "board on {} ({} Hz, watchdog {} ms); scene link on {}",
        sim.device, a.rate, a.watchdog_ms, sim.scene_addr
    );
    println!(
        "drive it: reflex run --robot serial:{} --scene {} --task {}",
        sim.device, sim.scene_addr, a.task
    );
    crate::stop_on_signals();
    let start = Instant::now();
    let mut last_print = Instant::now();
    while !INTERRUPT.load(Ordering::Relaxed)
        && a.seconds.is_none_or(|s| start.elapsed().as_secs_f64() < s)
    {
        std::thread::sleep(Duration::from_millis(50));
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let r = sim.report();
            tracing::info!(
                mode = ?r.mode,
                session = r.session,
                ticks = r.stats.ticks,
                host_frames = r.stats.frames,
                refused = r.rejects.total(),
                lost = r.host_frames_lost,
                late = r.late_periods,
                resets = sim.scene.resets.load(Ordering::Relaxed),
                "board"
            );
        }
    }
    let resets = sim.scene.resets.load(Ordering::Relaxed);
    let poses = sim.scene.poses_sent.load(Ordering::Relaxed);
    let physics_steps = sim.physics_steps();
    let r = sim.stop();
    let faults: Vec<&str> = r.faults.names().collect();
    println!(
        "{:.1} s: {} control periods ({} late), {} host frames ({} refused: {}, {} lost), {} watchdog trips, {} resets, {} pose messages; faults: {}",
        start.elapsed().as_secs_f64(),
        r.stats.ticks,
        r.late_periods,
        r.stats.frames,
        r.rejects.total(),
        reflex_jobs::firmware_sim::describe_rejects(&r.rejects),
        r.host_frames_lost,
        r.stats.watchdog_trips,
        resets,
        poses,
        if faults.is_empty() { "none".into() } else { faults.join(", ") },
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "device": a.port.clone().unwrap_or_else(|| "pty".into()),
                "seconds": start.elapsed().as_secs_f64(),
                "ticks": r.stats.ticks,
                "physics_steps": physics_steps,
                "late_periods": r.late_periods,
                "host_frames": r.stats.frames,
                "host_frames_refused": r.rejects.total(),
                "host_frames_lost": r.host_frames_lost,
                "watchdog_trips": r.stats.watchdog_trips,
                "resets": resets,
                "pose_messages": poses,
                "faults": faults,
            })
        );
    }
    Ok(())
}
