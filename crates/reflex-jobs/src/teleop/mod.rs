//! `reflex teleop`: a correction session on the simulated arm. The policy acts in real time,
//! episode after episode; the operator watches the page [`reflex_teleop::TeleopServer`] serves
//! (on loopback by default, behind a random access token) and takes over by holding the intervene
//! control; success and failure presses end the episode with that label; the page's e-stop
//! brakes the arm and a re-arm resumes the session with a new episode.
//!
//! The control thread runs the loop and resets the scene between episodes; this thread drains
//! the transitions (counting the steps the operator drove) and keeps the page's status.

use crate::run::{sim_runtime, RunError};
use reflex_core::Transition;
use reflex_core::{Frame, SceneView};
use reflex_runtime::{EStop, RuntimeStats};
use reflex_sim::Task;
use reflex_teleop::{FramesFn, OperatorHub, SessionInfo, Status, StatusFn, TeleopServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cameras the page shows, and the size they are rendered at.
const VIEW_CAMERAS: [&str; 2] = ["front", "wrist"];
const VIEW_SIZE: (usize, usize) = (160, 120);

/// What to run.
#[derive(Clone, Debug)]
pub struct TeleopSpec {
    /// The task.
    pub task: Task,
    /// `scripted` (the task's expert) or a base policy file.
    pub policy: String,
    /// A residual policy file.
    pub residual: Option<PathBuf>,
    /// The loop rate, Hz (default: the policy files', else 500).
    pub servo_rate_hz: Option<f64>,
    /// Seed of the first scene; episode i uses `seed + i`.
    pub seed: u64,
    /// Where to serve the page (another address than loopback only with `--bind`; the token is
    /// always needed).
    pub bind: SocketAddr,
}

/// What a session did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TeleopReport {
    /// Episodes that ended (not aborted by the e-stop).
    pub episodes: u64,
    /// Of them, successes (the task's, or the operator's label).
    pub successes: u64,
    /// Episodes the operator ended with a label.
    pub labelled: u64,
    /// Policy steps.
    pub policy_steps: u64,
    /// Policy steps the operator drove.
    pub intervened_steps: u64,
    /// E-stop presses from the page.
    pub estops: u64,
    /// Operator input messages applied.
    pub inputs: u64,
    /// Operator messages refused.
    pub refused: u64,
}

/// A running session.
pub struct TeleopSession {
    server: TeleopServer,
    hub: Arc<OperatorHub>,
    stats: Arc<RuntimeStats>,
    estop: EStop,
    stop: Arc<AtomicBool>,
    control: Option<std::thread::JoinHandle<Result<(), String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl TeleopSession {
    /// Builds the runtime, starts the control loop and the page's server.
    pub fn start(spec: &TeleopSpec) -> Result<Self, RunError> {
        let estop = EStop::new();
        let built = sim_runtime(
            &spec.task,
            &spec.policy,
            spec.residual.as_deref(),
            None,
            spec.servo_rate_hz.or(Some(500.0)),
            spec.seed,
            estop.clone(),
        )?;
        let mut rt = built.runtime;
        let stats = rt.stats().clone();
        let transitions = rt.transitions().clone();
        let hub = Arc::new(OperatorHub::new(
            rt.operator().clone(),
            spec.task.action_space,
            estop.clone(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        // The cameras' newest views: rendered by the control thread between stretches of the
        // loop (the simulated scene is the control thread's), encoded by the server's thread.
        let views: Arc<Mutex<Vec<(String, u64, Frame)>>> = Arc::new(Mutex::new(
            VIEW_CAMERAS
                .iter()
                .map(|c| (c.to_string(), 0, Frame::new(VIEW_SIZE.0, VIEW_SIZE.1)))
                .collect(),
        ));

        // The control thread: episodes back to back in real time; after an e-stop, waits for
        // the re-arm and starts a new episode. Every 200 ms of loop, the views are rendered.
        let control = {
            let (stop, estop, first_seed) = (stop.clone(), estop.clone(), spec.seed);
            let views = views.clone();
            std::thread::Builder::new()
                .name("reflex-control".into())
                .spawn(move || -> Result<(), String> {
                    let mut seed = first_seed;
                    let mut failure = None;
                    let mut scratch = Frame::new(VIEW_SIZE.0, VIEW_SIZE.1);
                    let mut rendered = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        rendered += 1;
                        for camera in VIEW_CAMERAS {
                            if rt.robot().render(camera, &mut scratch).is_err() {
                                continue;
                            }
                            // Never waits: a view the server is reading is skipped.
                            if let Ok(mut v) = views.try_lock() {
                                if let Some(slot) = v.iter_mut().find(|(c, _, _)| c == camera) {
                                    slot.1 = rendered;
                                    std::mem::swap(&mut slot.2, &mut scratch);
                                }
                            }
                        }
                        rt.run(Duration::from_millis(200), true, |rt, _| {
                            while estop.is_latched() && !stop.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if stop.load(Ordering::Acquire) {
                                return false;
                            }
                            seed += 1;
                            match rt.reset_episode(seed) {
                                Ok(()) => true,
                                Err(e) => {
                                    failure = Some(e.to_string());
                                    false
                                }
                            }
                        });
                        if let Some(e) = failure.take() {
                            return Err(e);
                        }
                    }
                    rt.shutdown((2.0 * rt.config().servo_rate_hz) as u64, true);
                    Ok(())
                })
                .map_err(|e| RunError::Control(e.to_string()))?
        };

        // This thread's part: drain the transitions into the page's status.
        let board = Arc::new(Mutex::new(Status::default()));
        let term_names = {
            use reflex_core::StepJudge;
            reflex_sim::TaskJudge::new(&spec.task).term_names()
        };
        let drain = {
            let (board, stop) = (board.clone(), stop.clone());
            std::thread::Builder::new()
                .name("reflex-teleop-drain".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(20));
                        let mut last: Option<Transition> = None;
                        while let Some(t) = transitions.pop() {
                            last = Some(t);
                        }
                        if let Some(t) = last {
                            let mut s = board.lock().unwrap_or_else(|p| p.into_inner());
                            s.step = t.step;
                            s.intervening = t.intervened;
                            let o = t.obs.as_slice();
                            let p = reflex_core::FLAT_TCP_POS;
                            if o.len() >= p + 3 {
                                s.tool_m = [o[p] as f64, o[p + 1] as f64, o[p + 2] as f64];
                            }
                            s.policy_action = t.base_action.as_slice().to_vec();
                            s.executed_action = t.action.as_slice().to_vec();
                            // A step cut short (an e-stop) has no terms: keep the last ones.
                            if !t.outcome.terms.values().is_empty() {
                                s.reward_terms = term_names
                                    .iter()
                                    .cloned()
                                    .zip(t.outcome.terms.values().iter().copied())
                                    .collect();
                            }
                        }
                    }
                })
                .map_err(|e| RunError::Control(e.to_string()))?
        };

        let status: StatusFn = {
            let (board, stats, estop, hub) = (board, stats.clone(), estop.clone(), hub.clone());
            Arc::new(move || {
                let mut s = board.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                s.episode = ld(&stats.episodes);
                s.successes = ld(&stats.successes);
                s.episodes_done = s.episode.saturating_sub(1);
                let steps = ld(&stats.policy_steps).max(1);
                s.intervention_rate = ld(&stats.intervened_steps) as f64 / steps as f64;
                s.input_seq = hub.stats.last_seq.load(Ordering::Relaxed);
                s.estop_latched = estop.is_latched();
                // Latched, nobody drives (the last step's flag is from before the press).
                s.intervening &= !s.estop_latched;
                s.jitter_p99_us = stats.timing.jitter.quantile_ns(0.99) as f64 / 1e3;
                s.deadline_misses = ld(&stats.timing.deadline_misses);
                s
            })
        };
        let frames: FramesFn = Arc::new(move || {
            views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, seq, _)| *seq > 0)
                .cloned()
                .collect()
        });
        let token = reflex_teleop::random_token()
            .map_err(|e| RunError::Setting(format!("access token: {e}")))?;
        let server = TeleopServer::start(
            spec.bind,
            token,
            hub.clone(),
            status,
            Some(frames),
            SessionInfo {
                task: spec.task.name.clone(),
                instruction: spec.task.instruction.clone(),
            },
        )
        .map_err(|e| RunError::Setting(format!("serving on {}: {e}", spec.bind)))?;
        Ok(Self {
            server,
            hub,
            stats,
            estop,
            stop,
            control: Some(control),
            drain: Some(drain),
        })
    }

    /// The page's address with its access token.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The WebSocket's address with its access token.
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    /// The e-stop the session's runtime obeys (the page presses it; so can a native device).
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// The loop's statistics.
    pub fn stats(&self) -> &Arc<RuntimeStats> {
        &self.stats
    }

    /// Runs until `until` says stop (checked every 100 ms), then ends the session: the arm is
    /// brought to rest and the server stops.
    pub fn run_until(
        mut self,
        mut until: impl FnMut(&Self) -> bool,
    ) -> Result<TeleopReport, RunError> {
        let started = Instant::now();
        while !until(&self) {
            std::thread::sleep(Duration::from_millis(100));
            if self.control.as_ref().is_some_and(|c| c.is_finished()) {
                break;
            }
        }
        tracing::info!(
            "teleop session over after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        self.finish()
    }

    fn finish(&mut self) -> Result<TeleopReport, RunError> {
        self.stop.store(true, Ordering::Release);
        let control = self.control.take().map(|c| c.join()).unwrap_or(Ok(Ok(())));
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        control
            .map_err(|_| RunError::Control("the control thread panicked".into()))?
            .map_err(RunError::Control)?;
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        let h = &self.hub.stats;
        Ok(TeleopReport {
            episodes: ld(&s.episodes).saturating_sub(1),
            successes: ld(&s.successes),
            labelled: ld(&s.operator_labels),
            policy_steps: ld(&s.policy_steps),
            intervened_steps: ld(&s.intervened_steps),
            estops: ld(&h.estops),
            inputs: ld(&h.inputs),
            refused: ld(&h.refused),
        })
    }
}

impl Drop for TeleopSession {
    fn drop(&mut self) {
        if self.control.is_some() {
            let _ = self.finish();
        }
    }
}
