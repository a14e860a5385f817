//! `reflex bench teleop`: page-to-arm latency. A client speaking the page's WebSocket protocol
//! on loopback ([`reflex_teleop::OperatorClient`]) takes over a correction session on the
//! simulated arm, sending its input at the page's rate (30 a second) in hold / release cycles;
//! the runtime times every executed operator command from the server's receipt to the first
//! joint command it produced leaving the safety filter (`RuntimeStats::operator_latency`).
//! Commands are applied at policy steps, so the wait for the next one dominates.

use super::BenchReport;
use crate::teleop::{TeleopSession, TeleopSpec};
use anyhow::{Context, Result};
use reflex_sim::Task;
use reflex_teleop::OperatorClient;
use std::time::{Duration, Instant};

/// Settings of `reflex bench teleop`.
#[derive(Clone, Debug)]
pub struct BenchTeleopSpec {
    /// Task name or file (its tool-motion actions are what the page sends).
    pub task: String,
    /// Control-loop rate, Hz.
    pub servo_rate_hz: f64,
    /// Seconds of operator input.
    pub seconds: f64,
    /// Input messages a second (the page sends 30).
    pub input_hz: f64,
}

/// Runs the measurement.
pub fn teleop(a: &BenchTeleopSpec) -> Result<BenchReport> {
    anyhow::ensure!(
        a.seconds > 0.0 && a.seconds.is_finite(),
        "--seconds {}: expected a positive duration",
        a.seconds
    );
    anyhow::ensure!(
        a.input_hz > 0.0 && a.input_hz <= 1000.0,
        "--input-hz {}: expected 0 < rate <= 1000",
        a.input_hz
    );
    let task = Task::load(&a.task).with_context(|| format!("task {}", a.task))?;
    let policy_hz = task.control_rate_hz;
    let session = TeleopSession::start(&TeleopSpec {
        robot: Default::default(),
        task,
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(a.servo_rate_hz),
        seed: 0,
        bind: "127.0.0.1:0".parse()?,
        learn: None,
        record: None,
        record_frames: false,
        success_hold_steps: 0,
    })?;
    let stats = session.stats().clone();
    let mut client = OperatorClient::connect(&session.ws_url(), Duration::from_secs(5))?;
    let period = Duration::from_secs_f64(1.0 / a.input_hz);
    let started = Instant::now();
    let mut next = started;
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < a.seconds {
        // Held for a second, released for a second: takeovers begin and end throughout.
        let holding = started.elapsed().as_secs().is_multiple_of(2);
        // A small motion up and down, so the arm stays in reach all along.
        let z = if (started.elapsed().as_secs() / 2).is_multiple_of(2) {
            0.3
        } else {
            -0.3
        };
        client.input([0.0, 0.0, z, 0.0, 0.0, 0.0], 1.0, holding)?;
        sent += 1;
        // Statuses are read (as the page does) so the socket never backs up.
        let _ = client.next_status(Duration::ZERO)?;
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    client.close();
    let report = session.run_until(|_| true)?;
    let h = &stats.operator_latency;
    let ms = |ns: u64| ns as f64 / 1e6;
    let (n, p50, p99, max) = (
        h.count(),
        ms(h.quantile_ns(0.5)),
        ms(h.quantile_ns(0.99)),
        ms(h.max_ns()),
    );
    anyhow::ensure!(n > 0, "no operator command was executed");
    let lines = vec![
        format!(
            "page-to-arm latency, {} at {:.0} Hz (policy {:.0} Hz), input {:.0}/s: {n} executed commands, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            a.task, a.servo_rate_hz, policy_hz, a.input_hz
        ),
        format!(
            "  {sent} inputs sent, {} applied, {} refused; {} policy steps driven by the operator; a policy step every {:.0} ms bounds the wait",
            report.inputs,
            report.refused,
            report.intervened_steps,
            1e3 / policy_hz
        ),
    ];
    let json = serde_json::json!({
        "task": a.task, "servo_rate_hz": a.servo_rate_hz, "policy_rate_hz": policy_hz,
        "input_hz": a.input_hz, "executed_commands": n, "p50_ms": p50, "p99_ms": p99,
        "max_ms": max, "inputs_sent": sent, "inputs_applied": report.inputs,
        "refused": report.refused, "intervened_steps": report.intervened_steps,
    });
    Ok(BenchReport { lines, json })
}
