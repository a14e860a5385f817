//! Action composition at every policy step (see ARCHITECTURE.md):
//! `a = base + scale * residual`, replaced by the operator's action while an intervention holds.
//!
//! Who acts is the operator's newest command's [`Takeover`]:
//! - `Held`: the operator, from this step until a command says `Released` (holding, not
//!   toggling: the policy is back at the first policy step after release);
//! - `Released`: the policy, at once (a magnitude takeover in progress ends too);
//! - `ByMagnitude` (a device without an intervene control): the operator when any component
//!   exceeds `threshold`, and for `hold_steps` policy steps after the last such input, so an
//!   operator who lets go of the stick for a moment does not hand control back mid-correction.
//!
//! During an intervention the operator's newest action is executed. An operator command of the
//! wrong length is refused (and counted by the caller), never executed and never marked as
//! intervened. When the operator's link goes silent the runtime ends the takeover
//! ([`Composer::end_takeover`]) and holds the arm; the last human action is not replayed.
//!
//! Non-finite values: a non-finite residual component leaves that component to the base alone
//! (a NaN residual never erases a finite base); whatever is still non-finite afterwards is
//! left for the runtime to hold at its last executed value.

use reflex_core::{Action, OperatorCommand, Takeover};

/// What one composition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Composed {
    /// The operator's action was executed.
    pub intervened: bool,
    /// An operator action arrived with the wrong number of components and was refused.
    pub refused_human: bool,
    /// Residual components that were non-finite (the base alone was used for them).
    pub non_finite_residual: usize,
}

/// The takeover rule and residual scale.
#[derive(Clone, Debug)]
pub struct Composer {
    /// Scale of the residual, typically 0.1 to 0.5.
    pub residual_scale: f32,
    /// Human action magnitude (any component) that takes over.
    pub threshold: f32,
    /// Policy steps the intervention lasts after the last input above the threshold.
    pub hold_steps: u32,
    remaining: u32,
    /// The operator holds the intervene control.
    held: bool,
    human: Option<Action>,
}

impl Composer {
    /// A composer with no intervention active.
    pub fn new(residual_scale: f32, threshold: f32, hold_steps: u32) -> Self {
        Self {
            residual_scale,
            threshold,
            hold_steps,
            remaining: 0,
            held: false,
            human: None,
        }
    }

    /// True while the operator is in control.
    pub fn intervening(&self) -> bool {
        self.held || self.remaining > 0
    }

    /// Ends a takeover at once (the operator's link went silent): nothing of it is replayed.
    pub fn end_takeover(&mut self) {
        self.remaining = 0;
        self.held = false;
        self.human = None;
    }

    /// Composes this step's action into `out`. `human` is the operator's newest command, if
    /// one arrived since the last step.
    pub fn compose(
        &mut self,
        base: &Action,
        residual: &Action,
        human: Option<&OperatorCommand>,
        out: &mut Action,
    ) -> Composed {
        let mut done = Composed::default();
        if let Some(h) = human {
            let a = &h.action;
            if a.dim() != out.dim() {
                done.refused_human = true;
            } else {
                match h.takeover {
                    Takeover::Held => self.held = true,
                    Takeover::Released => {
                        self.held = false;
                        self.remaining = 0;
                    }
                    Takeover::ByMagnitude => {
                        self.held = false;
                        if a.as_slice().iter().any(|v| v.abs() > self.threshold) {
                            self.remaining = self.hold_steps.max(1);
                        }
                    }
                }
                self.human = Some(*a);
            }
        }
        if self.held || self.remaining > 0 {
            if let Some(h) = &self.human {
                self.remaining = self.remaining.saturating_sub(1);
                out.copy_from(h.as_slice());
                done.intervened = true;
                return done;
            }
            self.held = false;
            self.remaining = 0;
        }
        let (b, r) = (base.as_slice(), residual.as_slice());
        for (i, o) in out.as_mut_slice().iter_mut().enumerate() {
            let bv = b.get(i).copied().unwrap_or(0.0);
            let rv = r.get(i).copied().unwrap_or(0.0);
            *o = if rv.is_finite() {
                (bv + self.residual_scale * rv).clamp(-1.0, 1.0)
            } else {
                done.non_finite_residual += 1;
                bv.clamp(-1.0, 1.0)
            };
            if !bv.is_finite() {
                *o = f32::NAN;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_core::ActionSpace;

    fn act(v: f32) -> Action {
        let mut a = Action::zeros(ActionSpace::EeDelta);
        a.as_mut_slice().fill(v);
        a
    }

    /// A command from a device without an intervene control.
    fn stick(v: f32) -> OperatorCommand {
        OperatorCommand::by_magnitude(act(v))
    }

    #[test]
    fn base_plus_scaled_residual() {
        let mut c = Composer::new(0.25, 0.5, 3);
        let mut out = act(0.0);
        assert!(!c.compose(&act(0.4), &act(0.8), None, &mut out).intervened);
        for v in out.as_slice() {
            assert!((v - 0.6).abs() < 1e-6);
        }
        // A zero residual leaves the base action exactly.
        c.compose(&act(0.3), &act(0.0), None, &mut out);
        assert!(out.as_slice().iter().all(|v| *v == 0.3));
    }

    #[test]
    fn the_human_takes_over_above_the_threshold_and_holds() {
        let mut c = Composer::new(0.5, 0.2, 3);
        let mut out = act(0.0);
        // Small human input: ignored.
        assert!(
            !c.compose(&act(0.1), &act(0.0), Some(&stick(0.15)), &mut out)
                .intervened
        );
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
        // Large input: takes over for this step and two more.
        assert!(
            c.compose(&act(0.1), &act(0.0), Some(&stick(-0.9)), &mut out)
                .intervened
        );
        assert!(out.as_slice().iter().all(|v| *v == -0.9));
        assert!(c.compose(&act(0.1), &act(0.0), None, &mut out).intervened);
        assert!(out.as_slice().iter().all(|v| *v == -0.9));
        assert!(
            c.compose(&act(0.1), &act(0.0), Some(&stick(0.05)), &mut out)
                .intervened
        );
        assert!(out.as_slice().iter().all(|v| *v == 0.05));
        // Hold expired: the policy is back.
        assert!(!c.compose(&act(0.1), &act(0.0), None, &mut out).intervened);
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
    }

    #[test]
    fn a_human_action_of_the_wrong_length_is_refused_and_not_marked_as_intervened() {
        //! The old composer started the takeover from the magnitude alone and then failed to
        //! copy the action, marking the step intervened with the policy's action in it.
        let mut c = Composer::new(0.5, 0.2, 3);
        let mut out = act(0.0);
        let wrong = Action::zeros(ActionSpace::JointDelta);
        let mut loud = wrong;
        loud.as_mut_slice().fill(0.9);
        let done = c.compose(
            &act(0.1),
            &act(0.0),
            Some(&OperatorCommand::held(loud)),
            &mut out,
        );
        assert!(done.refused_human && !done.intervened);
        assert!(!c.intervening());
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
    }

    #[test]
    fn a_non_finite_residual_never_erases_a_finite_base() {
        let mut c = Composer::new(0.5, 0.2, 3);
        let mut out = act(0.0);
        let mut r = act(0.2);
        r.as_mut_slice()[2] = f32::NAN;
        let done = c.compose(&act(0.1), &r, None, &mut out);
        assert_eq!(done.non_finite_residual, 1);
        assert_eq!(out.as_slice()[2], 0.1);
        assert!((out.as_slice()[0] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn holding_the_intervene_control_drives_whatever_the_magnitude_and_release_hands_back() {
        let mut c = Composer::new(0.5, 0.2, 10);
        let mut out = act(0.0);
        // Held with a still stick: the operator acts (holds the arm), however small the input.
        let d = c.compose(
            &act(0.1),
            &act(0.0),
            Some(&OperatorCommand::held(act(0.0))),
            &mut out,
        );
        assert!(d.intervened && out.as_slice().iter().all(|v| *v == 0.0));
        // Still held with no new command: the operator's last action goes on.
        assert!(c.compose(&act(0.1), &act(0.0), None, &mut out).intervened);
        let held_small = OperatorCommand::held(act(0.05));
        assert!(
            c.compose(&act(0.1), &act(0.0), Some(&held_small), &mut out)
                .intervened
        );
        assert!(out.as_slice().iter().all(|v| *v == 0.05));
        // Released: the policy is back at this very step, with no hold time.
        let released = OperatorCommand {
            action: act(0.9),
            ..OperatorCommand::released(ActionSpace::EeDelta)
        };
        assert!(
            !c.compose(&act(0.1), &act(0.0), Some(&released), &mut out)
                .intervened
        );
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
        // A released control ignores a stick pushed to the end (gamepad drift, a bumped stick).
        assert!(
            !c.compose(&act(0.1), &act(0.0), Some(&released), &mut out)
                .intervened
        );
        // Release also ends a magnitude takeover in progress.
        assert!(
            c.compose(&act(0.1), &act(0.0), Some(&stick(0.9)), &mut out)
                .intervened
        );
        assert!(
            !c.compose(&act(0.1), &act(0.0), Some(&released), &mut out)
                .intervened
        );
    }

    #[test]
    fn ending_a_takeover_replays_nothing() {
        let mut c = Composer::new(0.5, 0.2, 10);
        let mut out = act(0.0);
        assert!(
            c.compose(&act(0.1), &act(0.0), Some(&stick(0.9)), &mut out)
                .intervened
        );
        c.end_takeover();
        assert!(!c.compose(&act(0.1), &act(0.0), None, &mut out).intervened);
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
    }
}
