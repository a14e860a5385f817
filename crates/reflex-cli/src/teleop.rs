//! `reflex teleop`: a correction session on the simulated arm. Prints the page's address with
//! its access token, then runs until `--seconds` pass or Ctrl-C (the arm is brought to rest), and
//! reports episodes, successes and how much the operator drove.

use anyhow::{bail, Context, Result};
use clap::Args;
use reflex_jobs::teleop::{TeleopSession, TeleopSpec};
use reflex_sim::Task;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Arguments of `reflex teleop`.
#[derive(Args)]
pub struct TeleopArgs {
    /// Task name (from sim/tasks) or path to a task file.
    #[arg(long)]
    task: String,
    /// Base policy: `scripted` (the task's scripted expert) or a safetensors weights file.
    #[arg(long, default_value = "scripted")]
    policy: String,
    /// Residual network (safetensors).
    #[arg(long)]
    residual: Option<PathBuf>,
    /// Control loop rate, Hz [default: the policy files', else 500].
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the first scene; episode i uses `seed + i`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Port of the page (0: any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Serve on this address instead of 127.0.0.1 (another machine can then reach the page;
    /// it still needs the access token).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// End after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    seconds: Option<f64>,
    /// Print a JSON report as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &TeleopArgs) -> Result<()> {
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    if let Some(s) = a.seconds {
        if !(s > 0.0 && s.is_finite()) {
            bail!("--seconds {s}: expected a positive duration");
        }
    }
    let ip = a.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    crate::stop_on_signals();
    let session = TeleopSession::start(&TeleopSpec {
        task,
        policy: a.policy.clone(),
        residual: a.residual.clone(),
        servo_rate_hz: a.rate,
        seed: a.seed,
        bind: SocketAddr::new(ip, a.port),
    })?;
    eprintln!(
        "open {} (the token is the access key: keep it to yourself)",
        session.url()
    );
    if !ip.is_loopback() {
        eprintln!("serving on {ip}: every request still needs the token");
    }
    let started = Instant::now();
    let r = session.run_until(|_| {
        reflex_jobs::train::INTERRUPT.load(Ordering::Relaxed)
            || a.seconds
                .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
    })?;
    let rate = if r.policy_steps > 0 {
        100.0 * r.intervened_steps as f64 / r.policy_steps as f64
    } else {
        0.0
    };
    println!(
        "{} episodes, {} successes ({} labelled by the operator); the operator drove {} of {} policy steps ({rate:.1}%); {} e-stops; {} inputs, {} refused",
        r.episodes, r.successes, r.labelled, r.intervened_steps, r.policy_steps, r.estops, r.inputs, r.refused
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
