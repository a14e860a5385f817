//! Fusing named reward terms from several sources (the task's own terms, keypoints, a
//! preference model, a success classifier) into one scalar.
//!
//! Rules:
//! - every term has a weight;
//! - a learned or VLM term is bounded, either clipped to a range or paid as the change of a
//!   potential (`gamma * phi(s') - phi(s)`, which leaves the optimal policy unchanged and cannot
//!   be farmed by standing still in a region the model overrates);
//! - with [`Rule::SuccessOverrides`], a non-zero success term replaces every dense term.

use serde::{Deserialize, Serialize};

/// How a term is bounded before weighting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Bound {
    /// Used as is (the task's own terms, already in [0, 1]).
    None,
    /// Clipped to `[lo, hi]`.
    Clip {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Paid as `gamma * v' - v` between consecutive steps of an episode (0 on the first).
    Potential {
        /// Discount of the shaping (use the learner's).
        gamma: f64,
    },
}

/// One fused term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusedTerm {
    /// Name, logged as `reward/<name>`.
    pub name: String,
    /// Weight in the sum.
    #[serde(default = "one")]
    pub weight: f64,
    /// Whether this is the sparse success term.
    #[serde(default)]
    pub success: bool,
    /// Bounding.
    #[serde(default = "no_bound")]
    pub bound: Bound,
}

fn one() -> f64 {
    1.0
}

fn no_bound() -> Bound {
    Bound::None
}

/// How bounded terms combine (the one rule, from core).
pub use reflex_core::FusionRule as Rule;

/// A fusion of terms, with the per-episode memory potentials need.
#[derive(Clone, Debug)]
pub struct Fusion {
    terms: Vec<FusedTerm>,
    rule: Rule,
    previous: Vec<Option<f64>>,
    bounded: Vec<f64>,
}

/// Why a fusion cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FusionError {
    /// A term's settings are invalid.
    #[error("reward term `{name}`: {message}")]
    Term {
        /// The term.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl Fusion {
    /// Checks the terms and builds the fusion.
    pub fn new(terms: Vec<FusedTerm>, rule: Rule) -> Result<Self, FusionError> {
        for (k, t) in terms.iter().enumerate() {
            let bad = |m: &str| {
                Err(FusionError::Term {
                    name: t.name.clone(),
                    message: m.into(),
                })
            };
            if !t.weight.is_finite() {
                return bad("weight must be finite");
            }
            if terms[..k].iter().any(|o| o.name == t.name) {
                return bad("named twice");
            }
            match t.bound {
                Bound::Clip { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo <= hi) => {
                    return bad("clip needs finite lo <= hi");
                }
                Bound::Potential { gamma } if !(0.0..=1.0).contains(&gamma) => {
                    return bad("potential gamma must be in [0, 1]");
                }
                _ => {}
            }
        }
        let n = terms.len();
        Ok(Self {
            terms,
            rule,
            previous: vec![None; n],
            bounded: vec![0.0; n],
        })
    }

    /// The terms.
    pub fn terms(&self) -> &[FusedTerm] {
        &self.terms
    }

    /// Forgets the potentials of the previous episode.
    pub fn begin_episode(&mut self) {
        self.previous.fill(None);
    }

    /// Each term after bounding, from the last [`Fusion::fuse`] (for `reward/<name>` logs).
    pub fn bounded(&self) -> &[f64] {
        &self.bounded
    }

    /// Fuses one step's raw term values (in the order of the terms). A non-finite value counts
    /// as 0 for this step (and does not become a potential), so one bad answer cannot poison
    /// the reward.
    pub fn fuse(&mut self, values: &[f64]) -> f64 {
        assert_eq!(values.len(), self.terms.len(), "one value per term");
        let mut dense = 0.0;
        let mut success = 0.0;
        let mut any_success = false;
        for (k, t) in self.terms.iter().enumerate() {
            let v = values[k];
            let b = if !v.is_finite() {
                0.0
            } else {
                match t.bound {
                    Bound::None => v,
                    Bound::Clip { lo, hi } => v.clamp(lo, hi),
                    Bound::Potential { gamma } => {
                        let paid = self.previous[k].map_or(0.0, |p| gamma * v - p);
                        self.previous[k] = Some(v);
                        paid
                    }
                }
            };
            self.bounded[k] = b;
            if t.success {
                success += t.weight * b;
                any_success |= b != 0.0;
            } else {
                dense += t.weight * b;
            }
        }
        reflex_core::combine_success(dense, success, any_success, self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(name: &str, weight: f64, success: bool, bound: Bound) -> FusedTerm {
        FusedTerm {
            name: name.into(),
            weight,
            success,
            bound,
        }
    }

    #[test]
    fn success_overrides_only_when_it_fires() {
        let mut f = Fusion::new(
            vec![
                term("kp_reach", 0.5, false, Bound::None),
                term("pref", 1.0, false, Bound::Clip { lo: -1.0, hi: 1.0 }),
                term("success", 10.0, true, Bound::None),
            ],
            Rule::SuccessOverrides,
        )
        .unwrap();
        assert_eq!(f.fuse(&[0.8, 5.0, 0.0]), 0.4 + 1.0);
        assert_eq!(f.bounded(), &[0.8, 1.0, 0.0]);
        assert_eq!(f.fuse(&[0.8, 5.0, 1.0]), 10.0);
        let mut s = Fusion::new(f.terms().to_vec(), Rule::Sum).unwrap();
        assert_eq!(s.fuse(&[0.8, -5.0, 1.0]), 0.4 - 1.0 + 10.0);
    }

    /// A potential term pays only changes: holding a high value earns nothing, and an
    /// episode's payments telescope to gamma-discounted end minus start.
    #[test]
    fn potentials_pay_changes_and_telescope() {
        let mut f = Fusion::new(
            vec![term("pref", 1.0, false, Bound::Potential { gamma: 1.0 })],
            Rule::Sum,
        )
        .unwrap();
        let phis = [0.2, 0.9, 0.9, 0.9, 0.4, 1.3];
        let paid: f64 = phis.iter().map(|p| f.fuse(&[*p])).sum();
        assert!((paid - (1.3 - 0.2)).abs() < 1e-12);
        assert_eq!(f.fuse(&[1.3]), 0.0);
        f.begin_episode();
        assert_eq!(
            f.fuse(&[5.0]),
            0.0,
            "the first step of an episode pays nothing"
        );
    }

    #[test]
    fn non_finite_values_count_as_zero() {
        let mut f = Fusion::new(
            vec![
                term("a", 1.0, false, Bound::None),
                term("b", 1.0, false, Bound::Potential { gamma: 0.99 }),
            ],
            Rule::Sum,
        )
        .unwrap();
        assert_eq!(f.fuse(&[f64::NAN, 1.0]), 0.0);
        assert_eq!(f.fuse(&[0.5, f64::INFINITY]), 0.5);
        // The bad value did not replace the last good potential.
        assert!((f.fuse(&[0.0, 1.0]) - (0.99 - 1.0)).abs() < 1e-12);
    }

    #[test]
    fn bad_terms_are_refused_by_name() {
        let e = Fusion::new(
            vec![term("pref", 1.0, false, Bound::Clip { lo: 1.0, hi: -1.0 })],
            Rule::Sum,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`pref`"), "{e}");
        let e = Fusion::new(
            vec![
                term("a", 1.0, false, Bound::None),
                term("a", 2.0, false, Bound::None),
            ],
            Rule::Sum,
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
