//! Named reward terms computed from the task file, and their fusion into one scalar.

use crate::task::{Fusion, RewardKind, RewardSpec};

/// Most reward terms a task may declare.
pub const MAX_TERMS: usize = 8;

/// The values of a task's reward terms for one step, in task-file order. Fixed size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RewardTerms {
    values: [f64; MAX_TERMS],
    len: usize,
}

impl RewardTerms {
    /// Zeroed terms for a task with `len` terms.
    pub fn new(len: usize) -> Self {
        Self {
            values: [0.0; MAX_TERMS],
            len: len.min(MAX_TERMS),
        }
    }

    /// The raw (unweighted) term values.
    pub fn values(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// Sets term `i`.
    pub fn set(&mut self, i: usize, v: f64) {
        if i < self.len {
            self.values[i] = v;
        }
    }

    /// Combines the terms with the task's weights and fusion rule.
    pub fn total(&self, spec: &RewardSpec) -> f64 {
        let mut dense = 0.0;
        let mut success = 0.0;
        let mut any_success = false;
        for (t, v) in spec.terms.iter().zip(self.values()) {
            if matches!(t.kind, RewardKind::Success) {
                success += t.weight * v;
                any_success |= *v != 0.0;
            } else {
                dense += t.weight * v;
            }
        }
        match spec.fusion {
            Fusion::Sum => dense + success,
            Fusion::SuccessOverrides if any_success => success,
            Fusion::SuccessOverrides => dense,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::RewardTermSpec;

    fn spec(fusion: Fusion) -> RewardSpec {
        RewardSpec {
            fusion,
            terms: vec![
                RewardTermSpec {
                    name: "reach".into(),
                    weight: 0.5,
                    kind: RewardKind::ActionL2,
                },
                RewardTermSpec {
                    name: "success".into(),
                    weight: 10.0,
                    kind: RewardKind::Success,
                },
            ],
        }
    }

    #[test]
    fn success_overrides_dense_shaping_only_when_non_zero() {
        let mut t = RewardTerms::new(2);
        t.set(0, 0.8);
        assert_eq!(t.total(&spec(Fusion::SuccessOverrides)), 0.4);
        t.set(1, 1.0);
        assert_eq!(t.total(&spec(Fusion::SuccessOverrides)), 10.0);
        assert_eq!(t.total(&spec(Fusion::Sum)), 10.4);
    }
}
