//! Named reward terms computed from the task file, and their fusion into one scalar.

use crate::task::{RewardKind, RewardSpec};

pub use reflex_core::{RewardTerms, MAX_REWARD_TERMS as MAX_TERMS};

impl RewardSpec {
    /// Combines the terms with the task's weights and fusion rule.
    pub fn fuse(&self, terms: &RewardTerms) -> f64 {
        let spec = self;
        let mut dense = 0.0;
        let mut success = 0.0;
        let mut any_success = false;
        for (t, v) in spec.terms.iter().zip(terms.values()) {
            if matches!(t.kind, RewardKind::Success) {
                success += t.weight * v;
                any_success |= *v != 0.0;
            } else {
                dense += t.weight * v;
            }
        }
        reflex_core::combine_success(dense, success, any_success, spec.fusion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Fusion, RewardTermSpec};

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
        assert_eq!(spec(Fusion::SuccessOverrides).fuse(&t), 0.4);
        t.set(1, 1.0);
        assert_eq!(spec(Fusion::SuccessOverrides).fuse(&t), 10.0);
        assert_eq!(spec(Fusion::Sum).fuse(&t), 10.4);
    }
}
