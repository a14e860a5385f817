//! Action composition on every tick (see ARCHITECTURE.md):
//! `a = base + scale * residual`, replaced by the human's action while an intervention holds.
//!
//! An intervention starts when any component of the human's action exceeds `threshold` in
//! magnitude and lasts `hold_ticks` ticks after the last such input, so an operator who lets go
//! of the stick for a moment does not hand control back mid-correction. Non-finite values are
//! passed through on purpose: the safety filter turns them into a hold and a fault, where they
//! are counted.

use reflex_core::Action;

/// The takeover rule and residual scale.
#[derive(Clone, Debug)]
pub struct Composer {
    /// Scale of the residual, typically 0.1 to 0.5.
    pub residual_scale: f32,
    /// Human action magnitude (any component) that takes over.
    pub threshold: f32,
    /// Ticks the intervention lasts after the last input above the threshold.
    pub hold_ticks: u32,
    remaining: u32,
}

impl Composer {
    /// A composer with no intervention active.
    pub fn new(residual_scale: f32, threshold: f32, hold_ticks: u32) -> Self {
        Self {
            residual_scale,
            threshold,
            hold_ticks,
            remaining: 0,
        }
    }

    /// True while the human is in control.
    pub fn intervening(&self) -> bool {
        self.remaining > 0
    }

    /// Composes this tick's action into `out`; returns whether the human's action was used.
    /// `human` is the operator's latest action, if any arrived this tick.
    pub fn compose(
        &mut self,
        base: &Action,
        residual: &Action,
        human: Option<&Action>,
        out: &mut Action,
    ) -> bool {
        if let Some(h) = human {
            if h.as_slice().iter().any(|v| v.abs() > self.threshold) {
                self.remaining = self.hold_ticks.max(1);
            }
        }
        if self.remaining > 0 {
            self.remaining -= 1;
            if let Some(h) = human {
                if out.copy_from(h.as_slice()) {
                    return true;
                }
            }
            // Holding with no new input this tick: keep the operator's last action in `out`.
            return true;
        }
        let (b, r) = (base.as_slice(), residual.as_slice());
        for (i, o) in out.as_mut_slice().iter_mut().enumerate() {
            let bv = b.get(i).copied().unwrap_or(0.0);
            let rv = r.get(i).copied().unwrap_or(0.0);
            *o = (bv + self.residual_scale * rv).clamp(-1.0, 1.0);
            if !(bv + rv).is_finite() {
                *o = f32::NAN;
            }
        }
        false
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

    #[test]
    fn base_plus_scaled_residual() {
        let mut c = Composer::new(0.25, 0.5, 3);
        let mut out = act(0.0);
        assert!(!c.compose(&act(0.4), &act(0.8), None, &mut out));
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
        assert!(!c.compose(&act(0.1), &act(0.0), Some(&act(0.15)), &mut out));
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
        // Large input: takes over for this tick and two more.
        assert!(c.compose(&act(0.1), &act(0.0), Some(&act(-0.9)), &mut out));
        assert!(out.as_slice().iter().all(|v| *v == -0.9));
        assert!(c.compose(&act(0.1), &act(0.0), None, &mut out));
        assert!(
            out.as_slice().iter().all(|v| *v == -0.9),
            "keeps the last human action"
        );
        assert!(c.compose(&act(0.1), &act(0.0), Some(&act(0.05)), &mut out));
        assert!(out.as_slice().iter().all(|v| *v == 0.05));
        // Hold expired: the policy is back.
        assert!(!c.compose(&act(0.1), &act(0.0), None, &mut out));
        assert!(out.as_slice().iter().all(|v| *v == 0.1));
    }

    #[test]
    fn non_finite_residuals_reach_the_safety_filter() {
        let mut c = Composer::new(0.5, 0.2, 3);
        let mut out = act(0.0);
        c.compose(&act(0.1), &act(f32::NAN), None, &mut out);
        assert!(out.as_slice().iter().all(|v| v.is_nan()));
    }
}
