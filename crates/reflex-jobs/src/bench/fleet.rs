//! `reflex bench fleet`: what one learner takes in over Zenoh from 1, 2, 4 ... actor processes,
//! and how long a weights broadcast takes to reach every actor.
//!
//! The learner side runs in this process: the real ingest path (decode, exactly-once
//! bookkeeping, the learner's step conversion, the replay log on disk with its syncs and the
//! acknowledgements) without updates, so the figure is the transport and storage ceiling, not
//! the learning rate. The actors are child processes (`reflex bench fleet-actor`) that send
//! task-shaped transitions as fast as their outbox's hold bound lets them (they never drop),
//! and time every weights message the learner broadcasts (ten a second, the task's actor
//! network) from its publication to its arrival. Everything runs on loopback.

use super::BenchReport;
use crate::arms::{Arms, SimArms};
use crate::train::config::TrainConfig;
use anyhow::{bail, Context, Result};
use reflex_core::{Action, Transition};
use reflex_fleet::{
    now_ns, ActorLink, Batch, Ingest, LearnerLink, LinkSettings, Outbox, OutboxSettings, Weights,
};
use reflex_learn::replay::Source;
use reflex_sim::Task;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of `reflex bench fleet`.
#[derive(Clone, Debug)]
pub struct BenchFleetSpec {
    /// Task whose observation and action shapes are sent.
    pub task: String,
    /// Actor process counts to measure.
    pub actors: Vec<usize>,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Transitions per batch.
    pub batch: usize,
    /// The `reflex` binary to start the actors with.
    pub exe: std::path::PathBuf,
}

fn settings(port: u16, queue: usize) -> LinkSettings {
    LinkSettings {
        endpoint: format!("tcp/127.0.0.1:{port}"),
        zenoh_config: None,
        run: "bench".into(),
        queue,
    }
}

fn cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A learner persisting to `dir` with a base of the configured shape (cloned from one zero
/// pair: its forward pass costs what a trained one's does), and its actor network.
fn bench_learner(
    cfg: &TrainConfig,
    dir: &std::path::Path,
    obs_dim: usize,
    act_dim: usize,
) -> Result<(reflex_learn::learner::Learner, reflex_policy::Mlp)> {
    let mut bc = cfg.bc.clone();
    bc.steps = 1;
    let (base, _) = reflex_learn::bc::behaviour_clone(
        &vec![0.0; obs_dim],
        &vec![0.0; act_dim],
        obs_dim,
        act_dim,
        &bc,
        0,
    );
    let (learner, slot, _) =
        crate::train::driver::open_learner(cfg, dir, &base, obs_dim, act_dim, false)?;
    Ok((learner, slot.snapshot()))
}

/// Runs the measurements.
pub fn fleet(spec: &BenchFleetSpec) -> Result<BenchReport> {
    let task = Task::load(&spec.task).with_context(|| format!("task {}", spec.task))?;
    let arms = SimArms::new(task.clone(), 500.0);
    let layout = arms.obs_layout()?;
    let (obs_dim, act_dim) = (layout.dim(), task.action_space.dim());
    let cfg = TrainConfig::default();
    let mut report = BenchReport::default();
    let mut rows = Vec::new();
    for (k, &n) in spec.actors.iter().enumerate() {
        let port = 17_600 + (std::process::id() % 200) as u16 * 2 + k as u16;
        let dir =
            std::env::temp_dir().join(format!("reflex-bench-fleet-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut learner, actor_net) = bench_learner(&cfg, &dir, obs_dim, act_dim)?;
        let mut ingest = Ingest::open(&dir.join("fleet"), [])?;
        let link = LearnerLink::open(&settings(port, 4096), Vec::new())?;
        let weights_bytes = actor_net.to_safetensors();
        let mut children = Vec::new();
        for i in 0..n {
            children.push(
                Command::new(&spec.exe)
                    .args(["bench", "fleet-actor", "--port", &port.to_string()])
                    .args(["--task", &spec.task, "--batch", &spec.batch.to_string()])
                    .args(["--seconds", &(spec.seconds + 3.0).to_string()])
                    .args(["--name", &format!("bench-{i}")])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting an actor process")?,
            );
        }
        // Wait (bounded) for every actor's token, then measure for `seconds`.
        let t0 = Instant::now();
        while (link.actors.alive.load(Ordering::Relaxed) as usize) < n {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!(
                    "only {} of {n} actors came up",
                    link.actors.alive.load(Ordering::Relaxed)
                );
            }
            while link.try_recv().is_some() {}
            std::thread::sleep(Duration::from_millis(10));
        }
        let (mut taken, mut bytes, mut version) = (0u64, 0u64, 0u64);
        let started = Instant::now();
        let cpu0 = cpu_s();
        let mut last_ack = Instant::now();
        let mut last_pub = Instant::now();
        let mut measuring = false;
        let (mut m_taken, mut m_bytes, mut m_start, mut m_cpu) = (0u64, 0u64, Instant::now(), cpu0);
        while started.elapsed().as_secs_f64() < spec.seconds + 1.0 {
            if !measuring && started.elapsed() >= Duration::from_secs(1) {
                // The first second warms up (connections, page cache).
                measuring = true;
                (m_taken, m_bytes, m_start, m_cpu) = (taken, bytes, Instant::now(), cpu_s());
            }
            let mut got = false;
            // At most 64 batches between the acknowledgement and publication checks.
            for b in std::iter::from_fn(|| link.try_recv()).take(64) {
                got = true;
                bytes += b.len() as u64;
                let batch = Batch::decode(&b)?;
                let mut failed = None;
                ingest.take(&batch, |t| {
                    if let Some(step) = learner.step_from(t, Source::Online) {
                        if let Err(e) = learner.add_online(step) {
                            failed = Some(e);
                        }
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                taken += batch.transitions.len() as u64;
            }
            if last_ack.elapsed() >= Duration::from_millis(100) {
                last_ack = Instant::now();
                learner.sync_replay()?;
                for a in ingest.synced()? {
                    link.ack(&a);
                }
            }
            if last_pub.elapsed() >= Duration::from_millis(100) {
                last_pub = Instant::now();
                version += 1;
                link.publish(&Weights {
                    version,
                    published_ns: now_ns(),
                    safetensors: weights_bytes.clone(),
                });
            }
            if !got {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let secs = m_start.elapsed().as_secs_f64();
        let rate = (taken - m_taken) as f64 / secs;
        let cpu_us = (cpu_s() - m_cpu) * 1e6 / ((taken - m_taken).max(1)) as f64;
        let mb_per_actor = (bytes - m_bytes) as f64 / secs / 1e6 / n as f64;
        let mut lat: Vec<f64> = Vec::new();
        for c in children {
            let out = c.wait_with_output().context("an actor process")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .context("an actor's report")?;
            lat.extend(
                v["latencies_ms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_f64()),
            );
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| {
            lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let bytes_per_t = (bytes as f64 / taken.max(1) as f64).round();
        report.lines.push(format!(
            "{n} actor process(es): {rate:>9.0} transitions/s taken, {cpu_us:.2} us learner CPU per transition, {mb_per_actor:.2} MB/s per actor ({bytes_per_t} B per transition); weights ({} kB) to every actor p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
            weights_bytes.len() / 1000,
            q(0.5),
            q(0.99),
            lat.len()
        ));
        rows.push(serde_json::json!({
            "actors": n,
            "transitions_per_s": rate,
            "learner_cpu_us_per_transition": cpu_us,
            "mb_per_s_per_actor": mb_per_actor,
            "bytes_per_transition": bytes_per_t,
            "weights_bytes": weights_bytes.len(),
            "weights_latency_ms_p50": q(0.5),
            "weights_latency_ms_p99": q(0.99),
            "weights_deliveries": lat.len(),
            "duplicates": ingest.counters.duplicate_transitions,
            "queue_drops": link.queue_drops.load(Ordering::Relaxed),
        }));
        drop(link);
        let _ = std::fs::remove_dir_all(&dir);
    }
    report.json = serde_json::json!({
        "task": spec.task,
        "batch": spec.batch,
        "seconds": spec.seconds,
        "obs_dim": obs_dim,
        "runs": rows,
    });
    Ok(report)
}

/// `reflex bench fleet-actor`: sends task-shaped transitions to the bench's learner for
/// `seconds` as fast as acknowledgements allow, timing the weights it receives; prints a JSON
/// line.
pub fn fleet_actor(task: &str, port: u16, batch: usize, seconds: f64, name: &str) -> Result<()> {
    let task = Task::load(task).with_context(|| format!("task {task}"))?;
    let arms = SimArms::new(task.clone(), 500.0);
    let obs_dim = arms.obs_layout()?.dim();
    let mut link = ActorLink::open(&settings(port, 1))?;
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let l = latencies.clone();
    link.on_weights(move |w| {
        if let Ok(w) = w {
            if let Ok(mut v) = l.lock() {
                v.push(now_ns().saturating_sub(w.published_ns) as f64 / 1e6);
            }
        }
    })?;
    let stream = u64::from(std::process::id()) << 16 | now_ns() & 0xFFFF;
    let sl = link.stream(stream)?;
    let hold = batch * 64;
    let mut outbox = Outbox::new(
        OutboxSettings {
            batch,
            flush_after: Duration::from_millis(20),
            hold,
            resend_after: Duration::from_secs(2),
        },
        stream,
        name,
    );
    let mut t = Transition::empty(task.action_space);
    let obs: Vec<f32> = (0..obs_dim).map(|i| i as f32 * 0.01).collect();
    t.obs.extend_from(&obs);
    t.next_obs.extend_from(&obs);
    t.action = Action::zeros(task.action_space);
    t.base_action = Action::zeros(task.action_space);
    t.outcome.reward = 0.5;
    t.episode = 1;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        if outbox.unacked() + batch > hold {
            outbox.poll(&sl, &link.heard);
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..batch {
            t.step += 1;
            if t.step == 200 {
                t.step = 0;
                t.episode += 1;
            }
            outbox.push(t, &sl);
        }
        outbox.poll(&sl, &link.heard);
    }
    let lat = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({ "sent": outbox.counters.transitions, "acked": outbox.counters.acked_transitions,
            "dropped": outbox.counters.dropped_transitions, "latencies_ms": lat })
    );
    Ok(())
}
