//! Whole episodes on a runtime: the demonstrations before training and every evaluation. An
//! interrupt brakes the arm to rest first.

use super::config::{stage, TrainError};
use super::{BRAKE_LIMIT_S, INTERRUPT};
use reflex_core::{Robot, SceneReset, Transition};
use reflex_runtime::{Runtime, Ticker};
use std::sync::atomic::Ordering;

/// Per episode (success, return), and the transitions kept.
pub type EpisodeResults = (Vec<(bool, f64)>, Vec<Transition>);

/// Presses `rt`'s e-stop, ticks until the arm is at rest (at most [`BRAKE_LIMIT_S`]; paced at
/// the loop rate when `paced`, as a real-time arm needs) and releases the robot
/// (`Runtime::shutdown`).
pub fn brake_to_rest<R: Robot>(rt: &mut Runtime<R>, paced: bool) -> bool {
    let max_ticks = (BRAKE_LIMIT_S * rt.config().servo_rate_hz) as u64;
    let rested = rt.shutdown(max_ticks, paced);
    if !rested {
        tracing::error!("the arm did not come to rest within {BRAKE_LIMIT_S} s of braking");
    }
    rested
}

/// Runs whole episodes on `rt` from seeds `seeds`; returns per-episode (success, return) and
/// every transition when `keep` (else they are drained and dropped). Ticks are paced at the
/// loop rate when `paced` (a real-time arm), back to back otherwise. An interrupt brakes the
/// arm to rest and returns [`TrainError::Interrupted`].
pub fn run_episodes<R: Robot + SceneReset>(
    rt: &mut Runtime<R>,
    seeds: impl Iterator<Item = u64>,
    keep: bool,
    paced: bool,
) -> Result<EpisodeResults, TrainError> {
    let mut results = Vec::new();
    let mut kept = Vec::new();
    let q = rt.transitions().clone();
    for seed in seeds {
        rt.reset_episode(seed).map_err(stage("scene reset"))?;
        let mut ticker = paced.then(|| Ticker::new(rt.config().servo_rate_hz));
        let mut ret = 0.0;
        let mut success = false;
        loop {
            if INTERRUPT.load(Ordering::Relaxed) {
                brake_to_rest(rt, paced);
                return Err(TrainError::Interrupted);
            }
            let rep = match &mut ticker {
                Some(t) => rt.tick_paced(t),
                None => rt.tick(),
            };
            if let Some(o) = rep.outcome {
                if o.has_reward() {
                    ret += o.reward;
                }
                success |= o.success;
            }
            while let Some(t) = q.pop() {
                if keep {
                    kept.push(t);
                }
            }
            if rep.episode_done {
                tracing::debug!(
                    seed,
                    steps = rt.observation().step,
                    success,
                    ret,
                    faults = ?rt.stats().fault_counts(),
                    object = ?rt.observation().objects[0].pose.position_m,
                    tcp = ?rt.observation().robot.tcp_pose.position_m,
                    health = ?rt.robot_health(),
                    "episode done"
                );
                results.push((success, ret));
                break;
            }
        }
    }
    Ok((results, kept))
}

/// First seed of the held-out range. Every run's demonstrations, training and stopping
/// evaluations draw seeds below it ([`MAX_RUN_SEED`] keeps them there), so a held-out
/// evaluation judges scenes no run trained or stopped on, and every seed of a study is judged
/// on the same scenes.
pub const HELDOUT_FIRST_SEED: u64 = 1 << 62;

/// Run seeds are below this: `seed * 1_000_003 + stream * 10^7 + i` then stays below 2^53,
/// far under [`HELDOUT_FIRST_SEED`].
pub const MAX_RUN_SEED: u64 = 1 << 32;

/// The stream of the confirmations on fresh scenes (past any fleet actor's).
pub(crate) const CONFIRM_STREAM: u64 = 200;

/// The seeds of a run's confirmation number `index` (from 0) of `n` episodes: each draws scenes
/// none before it, no evaluation and no training episode used.
pub(crate) fn confirm_seeds(run_seed: u64, index: usize, n: usize) -> impl Iterator<Item = u64> {
    seeds(run_seed, CONFIRM_STREAM, (index + 1) * n).skip(index * n)
}

/// The `n` seeds of the held-out evaluation.
pub fn heldout_seeds(n: usize) -> impl Iterator<Item = u64> {
    (0..n as u64).map(|i| HELDOUT_FIRST_SEED + i)
}

/// The seeds of stream `stream` of run seed `run_seed` (1: demonstrations, 2: the stopping
/// evaluations, 3: training, 3 + i: a fleet actor's runtime i, 4: `reflex eval --seed`,
/// [`CONFIRM_STREAM`]: confirmations of the target).
pub(crate) fn seeds(run_seed: u64, stream: u64, n: usize) -> impl Iterator<Item = u64> {
    let base = run_seed
        .wrapping_mul(1_000_003)
        .wrapping_add(stream * 10_000_000);
    (0..n as u64).map(move |i| base + i)
}

/// Success rate and mean return of per-episode results.
pub(crate) fn success_and_return(r: &[(bool, f64)]) -> (f64, f64) {
    let n = r.len().max(1) as f64;
    (
        r.iter().filter(|x| x.0).count() as f64 / n,
        r.iter().map(|x| x.1).sum::<f64>() / n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No stream of any allowed run seed reaches the held-out range, even a long run's
    /// training stream or a fleet's hundredth actor.
    #[test]
    fn run_streams_stay_below_the_heldout_range() {
        let top = MAX_RUN_SEED - 1;
        for stream in [1, 2, 3, 4, 103, CONFIRM_STREAM] {
            let last = seeds(top, stream, 10_000_000).last().unwrap();
            assert!(last < HELDOUT_FIRST_SEED, "stream {stream}: {last}");
        }
        assert_eq!(
            heldout_seeds(2).collect::<Vec<_>>(),
            [1 << 62, (1 << 62) + 1]
        );
    }

    /// Confirmations draw new scenes each time, apart from the stopping evaluations, training
    /// and every fleet actor.
    #[test]
    fn each_confirmation_draws_fresh_scenes() {
        let first: Vec<u64> = confirm_seeds(7, 0, 50).collect();
        let second: Vec<u64> = confirm_seeds(7, 1, 50).collect();
        assert_eq!((first.len(), second.len()), (50, 50));
        assert_eq!(second[0], first[49] + 1);
        // Each of the other streams spans at most 10^7 seeds from its first.
        let far = confirm_seeds(7, 10_000, 50).last().unwrap();
        for stream in 1..=103 {
            let start = seeds(7, stream, 1).next().unwrap();
            let span = start..start + 10_000_000;
            assert!(
                !span.contains(&first[0]) && !span.contains(&far),
                "stream {stream}"
            );
        }
    }
}
