//! `reflex vlm-oracle`: the OpenAI-compatible oracle server in the foreground.

use anyhow::{bail, Context, Result};
use clap::Args;
use reflex_reward::oracle::{NoiseMode, Oracle, OracleConfig};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Arguments of `reflex vlm-oracle`.
#[derive(Args)]
pub struct OracleArgs {
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on. Loopback by default; the oracle is for tests and simulation.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Chance that an answer is wrong, 0..1 (how: --noise-modes).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// How wrong answers are wrong, drawn evenly from the list: random (a point anywhere, a
    /// flipped label), wrong-part (the object's far side), distractor (another thing in view),
    /// wrong-way (waypoints mirrored through the grasp point), left-right (the answer mirrored
    /// left to right), depth (the point behind the object), hedge (two proposals or "cannot
    /// tell"). Preference and success answers flip, or hedge.
    #[arg(long, value_delimiter = ',', default_value = "random")]
    noise_modes: Vec<NoiseMode>,
    /// Delay before every answer, milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Chance of answering HTTP 500 or 429 instead, 0..1.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Chance of answering text with no answer in it, 0..1.
    #[arg(long, default_value_t = 0.0)]
    garbage_rate: f64,
    /// Seed of the noise and fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the address as a JSON object.
    #[arg(long)]
    json: bool,
}

/// Serves until Ctrl-C.
pub fn run(a: &OracleArgs) -> Result<()> {
    for (name, v) in [
        ("--noise", a.noise),
        ("--error-rate", a.error_rate),
        ("--garbage-rate", a.garbage_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be in [0, 1], got {v}");
        }
    }
    if a.error_rate + a.garbage_rate > 1.0 {
        bail!("--error-rate plus --garbage-rate must not exceed 1");
    }
    let addr = format!("{}:{}", a.host, a.port)
        .parse()
        .with_context(|| format!("--host {} --port {}", a.host, a.port))?;
    let cfg = OracleConfig {
        noise: a.noise,
        noise_modes: a.noise_modes.clone(),
        latency: Duration::from_millis(a.latency_ms),
        error_rate: a.error_rate,
        garbage_rate: a.garbage_rate,
        seed: a.seed,
    };
    let oracle = Oracle::start(addr, cfg).with_context(|| format!("listening on {addr}"))?;
    crate::stop_on_signals();
    if a.json {
        println!("{}", serde_json::json!({ "base_url": oracle.base_url() }));
    } else {
        println!("VLM oracle at {} (Ctrl-C stops it)", oracle.base_url());
    }
    while !reflex_jobs::train::INTERRUPT.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = &oracle.stats;
    tracing::info!(
        requests = s.requests.load(Ordering::Relaxed),
        answered = s.answered.load(Ordering::Relaxed),
        wrong = s.wrong.load(Ordering::Relaxed),
        errors = s.errors.load(Ordering::Relaxed),
        garbage = s.garbage.load(Ordering::Relaxed),
        refused = s.refused.load(Ordering::Relaxed),
        "VLM oracle stopped"
    );
    oracle.stop();
    Ok(())
}
