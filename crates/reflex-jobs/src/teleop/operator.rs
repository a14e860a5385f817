//! The scripted operator: a stand-in for the person at the page, speaking the same WebSocket
//! protocol ([`reflex_teleop::OperatorClient`]). It watches the policy through the status the
//! page gets (the observation the policy saw, the step's reward), follows along with the task's
//! scripted expert, and takes over HIL-SERL-style when the policy stalls (the expert's plan has
//! not advanced for a while) or drifts (the tool moves well away from where the expert wants
//! it), for a bounded share of the steps, handing back once the expert's plan has moved on.
//! With [`OperatorRule::reward_progress`], a policy whose reward keeps rising is left alone.
//!
//! It sees what the policy sees and nothing more; the expert is the task's own
//! ([`reflex_sim::ScriptedExpert`]), as a person would be the expert on a real arm.

use reflex_core::{Action, ArmModel, Observation, Policy, FLAT_OBJECTS, FLAT_OBJECT_STRIDE};
use reflex_sim::{ScriptedExpert, Task};
use reflex_teleop::OperatorClient;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// When the scripted operator takes over and hands back.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct OperatorRule {
    /// Takes over when the expert's plan has not advanced for this many policy steps (and,
    /// with `stall_on_distance`, the tool has not come closer to the expert's target either).
    pub patience_steps: u64,
    /// A stall also needs the tool not to have come [`CLOSER_M`] closer to the expert's target
    /// within `patience_steps`: a policy still closing in on the target at its own pace is left
    /// alone, as a person would leave it, however long the expert's stage takes.
    pub stall_on_distance: bool,
    /// Takes over when the tool is this much farther from the expert's target than it has been
    /// in the current stage of the plan, metres.
    pub drift_m: f64,
    /// A takeover lasts at least this many policy steps, and ends once the plan has advanced.
    pub hold_steps: u64,
    /// ... or after this many steps at most.
    pub max_hold_steps: u64,
    /// No new takeover while the operator has driven more than this share of the steps seen.
    pub max_share: f64,
    /// Count a rising reward as progress: a policy whose reward keeps rising is not taken over
    /// (it may be on a route of its own). Off by default: in the sessions measured so far
    /// (README, Figures) it made the operator step in later and the policy learn more slowly.
    pub reward_progress: bool,
    /// The expert's tool motion is scaled by this. Its command reaches the arm one policy step
    /// after the observation it was computed from (status, then input, then the next step),
    /// and the expert closes the gap in one step: with that delay the full gain oscillates
    /// forever, half of it settles (the poles of `z^2 - z + g` have modulus `sqrt(g)`).
    pub gain: f64,
}

impl Default for OperatorRule {
    fn default() -> Self {
        Self {
            patience_steps: 10,
            stall_on_distance: false,
            drift_m: 0.03,
            hold_steps: 8,
            max_hold_steps: 60,
            max_share: 0.8,
            reward_progress: false,
            gain: 0.5,
        }
    }
}

/// What the scripted operator did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct OperatorReport {
    /// Status messages read.
    pub statuses: u64,
    /// Input messages sent.
    pub inputs: u64,
    /// Policy steps it saw.
    pub steps_seen: u64,
    /// Of them, steps it held the intervene control.
    pub steps_held: u64,
    /// Takeovers started, and why.
    pub takeovers: u64,
    /// ... because the plan stalled.
    pub stalls: u64,
    /// ... because the tool drifted.
    pub drifts: u64,
    /// Messages the session refused.
    pub refused: u64,
    /// The session closed the connection (it ended) before the operator was told to stop.
    pub session_ended: bool,
}

/// A reward this much above the episode's best so far is progress.
const REWARD_PROGRESS: f64 = 0.01;

/// Coming this much closer to the expert's target is progress (`stall_on_distance`).
pub const CLOSER_M: f64 = 0.005;

/// A drift is taken over only after this many policy steps without progress.
const DRIFT_GRACE: u64 = 3;

/// Seconds the operator waits for a status before resending its last input (the runtime's
/// link timeout must never see a silent operator during a takeover).
const RESEND: Duration = Duration::from_millis(30);

/// The takeover decision, policy step by policy step (apart from the link, so it can be
/// tested alone).
#[derive(Clone, Debug)]
pub struct Watcher {
    rule: OperatorRule,
    holding: bool,
    held: u64,
    takeover_phase: u8,
    phase: u8,
    phase_since: u64,
    best: f64,
    best_reward: f64,
    improved_at: u64,
    /// The tool's best distance to the target when it last came `CLOSER_M` closer, and when.
    closer: (f64, u64),
    /// Counters.
    pub report: OperatorReport,
}

impl Watcher {
    /// A watcher applying `rule`.
    pub fn new(rule: OperatorRule) -> Self {
        Self {
            rule,
            holding: false,
            held: 0,
            takeover_phase: 0,
            phase: 0,
            phase_since: 0,
            best: f64::INFINITY,
            best_reward: f64::NEG_INFINITY,
            improved_at: 0,
            closer: (f64::INFINITY, 0),
            report: OperatorReport::default(),
        }
    }

    /// A new episode starts at policy step `step`: nobody holds, the plan starts over.
    pub fn new_episode(&mut self, step: u64) {
        (self.holding, self.held, self.phase) = (false, 0, 0);
        (self.phase_since, self.best) = (step, f64::INFINITY);
        (self.best_reward, self.improved_at) = (f64::NEG_INFINITY, step);
        self.closer = (f64::INFINITY, step);
    }

    /// The e-stop latched: the operator lets go.
    pub fn let_go(&mut self) {
        self.holding = false;
    }

    /// Whether the intervene control is held.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Policy step `step`: the expert's plan is at `phase`, the tool is `dist_m` from where
    /// the expert wants it, and the last judged step's reward was `reward` (if known). Returns
    /// whether the operator holds the intervene control for it.
    pub fn step(&mut self, step: u64, phase: u8, dist_m: f64, reward: Option<f64>) -> bool {
        if let Some(v) = reward.filter(|v| v.is_finite() && self.rule.reward_progress) {
            if v > self.best_reward + REWARD_PROGRESS {
                (self.best_reward, self.improved_at) = (v, step);
            }
        }
        let r = &mut self.report;
        r.steps_seen += 1;
        if phase != self.phase {
            (self.phase, self.phase_since, self.best) = (phase, step, f64::INFINITY);
            self.closer = (dist_m, step);
        }
        if dist_m < self.closer.0 - CLOSER_M {
            self.closer = (dist_m, step);
        }
        self.best = self.best.min(dist_m);
        if self.holding {
            self.held += 1;
            r.steps_held += 1;
            let advanced = self.phase != self.takeover_phase;
            if (self.held >= self.rule.hold_steps && advanced)
                || self.held >= self.rule.max_hold_steps
            {
                // Handed back: the policy gets its own patience from here.
                self.holding = false;
                (self.phase_since, self.best, self.improved_at) = (step, dist_m, step);
                self.closer = (dist_m, step);
            }
        } else {
            let share = r.steps_held as f64 / r.steps_seen as f64;
            // Without the reward condition, progress is never seen: stage and distance alone.
            let since_progress = if self.rule.reward_progress {
                step.saturating_sub(self.improved_at)
            } else {
                u64::MAX
            };
            let since_closer = if self.rule.stall_on_distance {
                step.saturating_sub(self.closer.1)
            } else {
                u64::MAX
            };
            let stalled = step.saturating_sub(self.phase_since) >= self.rule.patience_steps
                && since_progress >= self.rule.patience_steps
                && since_closer >= self.rule.patience_steps;
            let drifted = dist_m > self.best + self.rule.drift_m && since_progress >= DRIFT_GRACE;
            if (stalled || drifted) && share < self.rule.max_share {
                (self.holding, self.held, self.takeover_phase) = (true, 0, self.phase);
                r.takeovers += 1;
                if stalled {
                    r.stalls += 1;
                } else {
                    r.drifts += 1;
                }
            }
        }
        self.holding
    }
}

/// Runs the scripted operator on `ws_url` until `stop` is set; `model` is the arm's (the
/// expert plans in its joint space).
pub fn run_scripted_operator(
    ws_url: &str,
    task: &Task,
    model: &ArmModel,
    rule: OperatorRule,
    stop: &AtomicBool,
) -> Result<OperatorReport, String> {
    let mut client =
        OperatorClient::connect(ws_url, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let mut expert = ScriptedExpert::new(task, model);
    let (n_obj, n_kp) = (task.objects.len(), task.keypoints.len());
    let mut w = Watcher::new(rule);
    let mut action = Action::zeros(task.action_space);
    let mut last: Option<(u64, u64)> = None; // (episode, step)
    let mut motion = ([0.0f64; 6], 0.0f64);
    while !stop.load(Ordering::Acquire) {
        let status = match client.next_status(RESEND) {
            Ok(s) => s,
            Err(e) => return link_lost(w.report, e),
        };
        w.report.refused += client.take_errors().len() as u64;
        if let Some(s) = status {
            w.report.statuses += 1;
            if s.estop_latched {
                w.let_go();
            }
            let new_episode = last.is_none_or(|(e, st)| e != s.episode || s.step < st);
            let new_step = new_episode || last.is_some_and(|(_, st)| st != s.step);
            let flat = &s.observation;
            let goals = flat
                .len()
                .saturating_sub(FLAT_OBJECTS + FLAT_OBJECT_STRIDE * n_obj + 3 * n_kp)
                / 3;
            let obs = Observation::from_flat(flat, n_obj, n_kp, goals);
            if let (true, false, Some(obs)) = (new_step, s.estop_latched, obs) {
                if new_episode {
                    expert.reset();
                    w.new_episode(s.step);
                }
                last = Some((s.episode, s.step));
                expert.act(&obs, &mut action);
                let (t, p) = (expert.target_m(), obs.robot.tcp_pose.position_m);
                let dist =
                    ((t[0] - p[0]).powi(2) + (t[1] - p[1]).powi(2) + (t[2] - p[2]).powi(2)).sqrt();
                w.step(s.step, expert.phase(), dist, s.reward);
                let a = action.as_slice();
                let mut m = [0.0; 6];
                for (o, v) in m.iter_mut().zip(a) {
                    *o = rule.gain * f64::from(*v);
                }
                motion = (m, f64::from(a[6]));
            }
        }
        // Every status answered, and silence filled: the link never times out mid-takeover.
        if let Err(e) = client.input(motion.0, motion.1, w.holding()) {
            return link_lost(w.report, e);
        }
        w.report.inputs += 1;
    }
    // Hand back before leaving.
    let _ = client.input([0.0; 6], motion.1, false);
    client.close();
    Ok(w.report)
}

/// A link that fails after the session has spoken ends the operator's work (the session
/// closed); one that never worked is an error.
fn link_lost(
    mut r: OperatorReport,
    e: reflex_teleop::ClientError,
) -> Result<OperatorReport, String> {
    match e {
        reflex_teleop::ClientError::Link(e) if r.statuses > 0 => {
            tracing::info!("scripted operator: the session closed the link ({e})");
            r.session_ended = true;
            Ok(r)
        }
        e => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> OperatorRule {
        OperatorRule {
            patience_steps: 10,
            stall_on_distance: false,
            drift_m: 0.03,
            hold_steps: 4,
            max_hold_steps: 20,
            max_share: 0.5,
            reward_progress: true,
            gain: 0.5,
        }
    }

    #[test]
    fn a_policy_that_makes_progress_is_left_alone() {
        let mut w = Watcher::new(rule());
        w.new_episode(0);
        for step in 0..100u64 {
            // A new stage every 8 steps, the tool closing in within each.
            let phase = (step / 8) as u8;
            let dist = 0.2 - 0.02 * (step % 8) as f64;
            assert!(!w.step(step, phase, dist, None), "step {step}");
        }
        assert_eq!(w.report.takeovers, 0);
    }

    #[test]
    fn a_stall_is_taken_over_until_the_plan_advances() {
        let mut w = Watcher::new(rule());
        w.new_episode(0);
        let held: Vec<bool> = (0..30u64)
            .map(|step| {
                // Stuck in stage 0 until step 15, then stage 1.
                let phase = u8::from(step >= 15);
                w.step(step, phase, 0.1, Some(0.2))
            })
            .collect();
        // Patience runs out at step 10; the stage advances at 15, after the 4 steps a hold
        // lasts at least, so control returns at step 15; stuck again in stage 1 for 10 steps,
        // the operator takes over again at 25.
        assert!(!held[9] && held[10..15].iter().all(|h| *h), "{held:?}");
        assert!(!held[15..25].iter().any(|h| *h) && held[25], "{held:?}");
        assert_eq!((w.report.stalls, w.report.drifts), (2, 0));
    }

    #[test]
    fn a_drift_is_taken_over_and_a_long_hold_ends() {
        let mut w = Watcher::new(rule());
        w.new_episode(0);
        for step in 0..4 {
            assert!(!w.step(step, 0, 0.05, Some(0.3)));
        }
        // 4 cm farther than the best so far, no progress for 3 steps: drifting.
        assert!(w.step(4, 0, 0.09, Some(0.3)));
        assert_eq!(w.report.drifts, 1);
        // The plan never advances: the hold ends after max_hold_steps.
        let mut step = 5;
        while w.step(step, 0, 0.05, Some(0.3)) {
            step += 1;
        }
        assert_eq!(step, 4 + 20, "held for max_hold_steps");
    }

    /// A policy whose reward keeps rising is left alone, though it takes a route of its own
    /// (the expert's stage never advances and the tool is far from the expert's target).
    #[test]
    fn a_policy_making_progress_its_own_way_is_left_alone() {
        let mut w = Watcher::new(rule());
        w.new_episode(0);
        for step in 0..60u64 {
            let reward = 0.02 * step as f64;
            assert!(
                !w.step(step, 0, 0.1 + 0.002 * step as f64, Some(reward)),
                "step {step}"
            );
        }
        // Once the reward stops rising, patience runs out as before.
        let held = (60..80u64).any(|step| w.step(step, 0, 0.2, Some(1.18)));
        assert!(held);
    }

    /// Without the reward condition the same policy is taken over once its stage stalls.
    #[test]
    fn without_the_reward_condition_stages_alone_decide() {
        let mut w = Watcher::new(OperatorRule {
            reward_progress: false,
            ..rule()
        });
        w.new_episode(0);
        let first = (0..60u64).find(|&step| w.step(step, 0, 0.1, Some(0.02 * step as f64)));
        assert_eq!(first, Some(10));
    }

    /// With `stall_on_distance`, a policy still closing in on the target is left alone however
    /// long the stage takes; once it stops coming closer, patience runs out as before.
    #[test]
    fn a_policy_still_closing_in_is_not_a_stall() {
        let mut w = Watcher::new(OperatorRule {
            stall_on_distance: true,
            ..rule()
        });
        w.new_episode(0);
        // 6 mm closer every 5 steps for 50 steps: never taken over.
        for step in 0..50u64 {
            let dist = 0.4 - 0.006 * (step / 5) as f64;
            assert!(!w.step(step, 0, dist, Some(0.0)), "step {step}");
        }
        // Stuck at 34 cm from step 50 (itself 6 mm closer): a stall 10 steps later.
        let first = (50..80u64).find(|&step| w.step(step, 0, 0.34, Some(0.0)));
        assert_eq!(first, Some(60));
        // Without the option, the same approach is taken over at step 10.
        let mut w = Watcher::new(rule());
        w.new_episode(0);
        let first =
            (0..50u64).find(|&step| w.step(step, 0, 0.4 - 0.006 * (step / 5) as f64, Some(0.0)));
        assert_eq!(first, Some(10));
    }

    #[test]
    fn no_new_takeover_beyond_the_share() {
        let mut w = Watcher::new(OperatorRule {
            max_share: 0.2,
            ..rule()
        });
        w.new_episode(0);
        // A policy that never advances and keeps drifting.
        for step in 0..400u64 {
            w.step(step, 0, if step % 2 == 0 { 0.0 } else { 0.2 }, Some(0.0));
        }
        let share = w.report.steps_held as f64 / w.report.steps_seen as f64;
        // A takeover in progress may carry it a little past the bound, never far.
        assert!(share <= 0.2 + 20.0 / 400.0, "{share}");
        assert!(w.report.takeovers >= 2, "{:?}", w.report);
    }
}
