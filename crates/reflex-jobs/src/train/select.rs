//! Which weights a run stops on and hands over: confirmations of the target on fresh scenes
//! (`confirm_episodes`) and the best evaluation's weights kept for a run that ends on its budget
//! (`keep_best`). Shared by `reflex train` and the fleet's learner.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{confirm_seeds, success_and_return};
use super::report::{Confirmation, EvalRow, HandedOver, RunState};
use reflex_policy::Mlp;
use reflex_runtime::WeightsSlot;
use std::path::Path;

/// Where a run keeps its best evaluation's exploring actor (`keep_best`).
pub(crate) const BEST_ACTOR_FILE: &str = "best_actor.safetensors";

/// Adds an evaluation's row: without confirmations one at the target is the run's first to
/// reach it (unless one was); with them that waits for [`record_confirmation`]. Returns whether
/// `row` reached the target and is to be confirmed.
fn push_evaluation(cfg: &TrainConfig, state: &mut RunState, row: &EvalRow) -> bool {
    let reached = row.success_rate >= cfg.target_success;
    if reached && cfg.confirm_episodes == 0 {
        state.reached_target(row);
    }
    state.evals.push(row.clone());
    reached && cfg.confirm_episodes > 0
}

/// Plays one episode per seed and returns each one's (success, return).
pub(crate) type PlayEpisodes<'a> =
    dyn FnMut(&mut dyn Iterator<Item = u64>) -> Result<Vec<(bool, f64)>, TrainError> + 'a;

/// Adds a trained evaluation's row (see [`push_evaluation`]), keeps its weights if they are the
/// best (see [`keep_if_best`]) and, when it reached the target, confirms it with `play` on the
/// next fresh scenes. Returns whether the run reached the target at `row`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn judge_evaluation(
    cfg: &TrainConfig,
    state: &mut RunState,
    best_actor: &mut Option<Mlp>,
    row: &EvalRow,
    slot: &WeightsSlot,
    out: &Path,
    play: &mut PlayEpisodes<'_>,
) -> Result<bool, TrainError> {
    let to_confirm = push_evaluation(cfg, state, row);
    keep_if_best(cfg, state, best_actor, row, slot, out)?;
    if !to_confirm {
        return Ok(row.success_rate >= cfg.target_success);
    }
    let results = play(&mut next_confirm_seeds(cfg, state))?;
    Ok(record_confirmation(cfg, state, row, &results))
}

/// The seeds of the run's next confirmation (a set no earlier one used).
fn next_confirm_seeds(cfg: &TrainConfig, state: &RunState) -> impl Iterator<Item = u64> {
    confirm_seeds(cfg.seed, state.confirmations.len(), cfg.confirm_episodes)
}

/// Records the confirmation of `row` (an evaluation that reached the target) from the
/// episodes played on [`next_confirm_seeds`]; returns whether they reached the target too
/// (then `row` is the run's first to reach it, unless one already was).
fn record_confirmation(
    cfg: &TrainConfig,
    state: &mut RunState,
    row: &EvalRow,
    results: &[(bool, f64)],
) -> bool {
    let first_seed = next_confirm_seeds(cfg, state).next().unwrap_or(0);
    let (success_rate, _) = success_and_return(results);
    let passed = success_rate >= cfg.target_success;
    tracing::info!(
        eval = row.success_rate,
        confirmed = success_rate,
        passed,
        "confirmation on {} fresh scenes",
        results.len()
    );
    state.confirmations.push(Confirmation {
        env_steps: row.env_steps,
        updates: row.updates,
        eval_success_rate: row.success_rate,
        episodes: results.len(),
        first_seed,
        success_rate,
        passed,
    });
    if passed {
        state.reached_target(row);
    }
    passed
}

/// The best evaluation's actor a resumed run kept (none for a fresh run or without
/// `keep_best`, which also forgets the record). A kept record without its file is an error
/// naming the file.
pub(crate) fn load_best(
    cfg: &TrainConfig,
    state: &mut RunState,
    out: &Path,
    resuming: bool,
) -> Result<Option<Mlp>, TrainError> {
    if !cfg.keep_best {
        state.best = None;
        return Ok(None);
    }
    if !resuming || state.best.is_none() {
        return Ok(None);
    }
    let path = out.join(BEST_ACTOR_FILE);
    Mlp::load(&path)
        .map(Some)
        .map_err(|e| stage("resuming")(format!("{}: {e}", path.display())))
}

/// Keeps the weights `row` judged (the slot's) if they are the best so far (`keep_best`): in
/// memory and in `out`'s [`BEST_ACTOR_FILE`] (written whole, then renamed), so a resumed run
/// still has them.
pub(crate) fn keep_if_best(
    cfg: &TrainConfig,
    state: &mut RunState,
    best_actor: &mut Option<Mlp>,
    row: &EvalRow,
    slot: &WeightsSlot,
    out: &Path,
) -> Result<(), TrainError> {
    if !cfg.keep_best || !state.offer_best(row) {
        return Ok(());
    }
    let actor = slot.snapshot();
    let path = out.join(BEST_ACTOR_FILE);
    let tmp = out.join(format!("{BEST_ACTOR_FILE}.tmp"));
    actor.save(&tmp).map_err(stage(BEST_ACTOR_FILE))?;
    std::fs::rename(&tmp, &path).map_err(stage(BEST_ACTOR_FILE))?;
    *best_actor = Some(actor);
    Ok(())
}

/// The weights a run hands over once training ended: the last ones (`latest`, the learner's
/// deployed actor, whose exploring form the slot holds), or, for a run ended on its budget
/// whose last evaluation fell below its best, the best evaluation's (then published to
/// `slot`, so the held-out evaluation judges them). Returns the deployed actor to save and
/// which weights they are (none when the run was interrupted).
#[allow(clippy::too_many_arguments)]
pub(crate) fn hand_over(
    state: &RunState,
    best_actor: Option<&Mlp>,
    stop_reason: &str,
    latest: Mlp,
    (env_steps, updates): (u64, u64),
    slot: &WeightsSlot,
    act_dim: usize,
) -> Result<(Mlp, Option<HandedOver>), TrainError> {
    let last = state.evals.last();
    if stop_reason == "interrupted" {
        return Ok((latest, None));
    }
    if let (Some(best), Some(actor), Some(last)) = (&state.best, best_actor, last) {
        if stop_reason != "target success reached" && best.success_rate > last.success_rate {
            tracing::info!(
                best = best.success_rate,
                at_steps = best.env_steps,
                last = last.success_rate,
                "handing over the best evaluation's weights"
            );
            slot.publish(actor.clone())
                .map_err(stage("publishing the best weights"))?;
            let deployed = reflex_learn::sac::deterministic_of(actor, act_dim)
                .map_err(stage("the best weights"))?;
            return Ok((deployed, Some(best.clone())));
        }
    }
    let handed = last.map(|l| HandedOver {
        env_steps,
        updates,
        success_rate: l.success_rate,
        why: "last".into(),
    });
    Ok((latest, handed))
}

#[cfg(test)]
mod tests {
    use super::*;

    use reflex_policy::Activation;

    /// An exploring actor (4 inputs, 2 action means and 2 log-stds) whose every parameter is `v`.
    fn actor(v: f32) -> Mlp {
        let mut m = Mlp::zeros(&[4, 8, 4], Activation::Relu, Activation::Identity);
        let layers = m
            .layer_params()
            .into_iter()
            .map(|mut l| {
                l.weight.iter_mut().for_each(|w| *w = v);
                l.bias.iter_mut().for_each(|b| *b = v);
                l
            })
            .collect();
        m = Mlp::from_layers(layers, Activation::Relu, Activation::Identity).unwrap();
        m
    }

    fn params(m: &Mlp) -> Vec<reflex_policy::LayerParams> {
        m.layer_params()
    }

    fn row(env_steps: u64, success_rate: f64) -> EvalRow {
        EvalRow {
            env_steps,
            updates: env_steps,
            success_rate,
            ..EvalRow::base(0.0, (success_rate, 0.0), 0.01)
        }
    }

    /// The best evaluation is kept (ties to the later weights), and a run ended on its budget
    /// whose last evaluation fell below it hands those weights over and publishes them; a run
    /// stopped at its target, or whose last evaluation is the best, hands over its last.
    #[test]
    fn the_best_evaluation_is_handed_over_only_when_the_last_fell_below_it() {
        let act = actor(0.1);
        let other = actor(-0.2);
        let slot = WeightsSlot::new(act.clone());
        let mut state = RunState::default();
        for (steps, s) in [(0, 0.5), (10, 0.9), (20, 0.9), (30, 0.7)] {
            let r = row(steps, s);
            state.offer_best(&r);
            state.evals.push(r);
        }
        let best = state.best.clone().unwrap();
        assert_eq!((best.env_steps, best.success_rate), (20, 0.9));
        let latest = reflex_learn::sac::deterministic_of(&other, 2).unwrap();
        slot.publish(other.clone()).unwrap();
        let (deployed, handed) = hand_over(
            &state,
            Some(&act),
            "step budget",
            latest.clone(),
            (30, 30),
            &slot,
            2,
        )
        .unwrap();
        assert_eq!(handed.unwrap().why, "best evaluation");
        let kept = reflex_learn::sac::deterministic_of(&act, 2).unwrap();
        assert_eq!(params(&deployed), params(&kept));
        assert_eq!(
            params(&slot.snapshot()),
            params(&act),
            "the held-out evaluation would judge other weights"
        );

        let (deployed, handed) = hand_over(
            &state,
            Some(&act),
            "target success reached",
            latest.clone(),
            (30, 30),
            &slot,
            2,
        )
        .unwrap();
        assert_eq!(params(&deployed), params(&latest));
        assert_eq!(handed.unwrap().why, "last");

        let r = row(40, 0.9);
        assert!(state.offer_best(&r), "a tie goes to the later weights");
        state.evals.push(r);
        let (_, handed) = hand_over(
            &state,
            Some(&act),
            "time budget",
            latest.clone(),
            (40, 40),
            &slot,
            2,
        )
        .unwrap();
        assert_eq!(handed.unwrap().why, "last");
        let (_, handed) = hand_over(
            &state,
            Some(&act),
            "interrupted",
            latest,
            (40, 40),
            &slot,
            2,
        )
        .unwrap();
        assert!(handed.is_none());
    }
}
