//! Named reward terms computed from the task file, and their fusion into one scalar.
//!
//! [`TaskJudge`] is the task's reward, success and termination as a function of the
//! observation alone (the arm's state, the tracked objects, keypoints on them and the goals):
//! nothing in it reads the simulator, so the same judge scores a simulated step and a real
//! arm's step whose object poses come from a tracker (`reflex ros run`, `reflex ros train`).

use crate::task::{PointRef, RewardKind, RewardSpec, SuccessSpec, Task};
use reflex_core::{Action, Observation, Outcome, MAX_OBJECTS};

pub use reflex_core::{RewardTerms, MAX_REWARD_TERMS as MAX_TERMS};

/// An object below this height has fallen off the table, metres.
pub const FLOOR_Z_M: f64 = -0.2;
/// A lifted object counts as held when its centre is this close to the TCP, metres.
pub const HELD_DISTANCE_M: f64 = 0.08;

#[derive(Clone, Copy, Debug)]
enum SuccessRefs {
    Near {
        a: PointRef,
        b: PointRef,
        tol: f64,
        xy: bool,
    },
    Lifted {
        object: usize,
        height: f64,
    },
    Inserted {
        peg: PointRef,
        hole: PointRef,
        depth: f64,
        tol: f64,
    },
}

#[derive(Clone, Copy, Debug)]
enum TermRef {
    Success,
    Distance {
        from: PointRef,
        to: PointRef,
        scale: f64,
        xy: bool,
    },
    Lift {
        object: usize,
        height: f64,
    },
    ActionL2,
}

/// What [`TaskJudge::judge`] found for one step.
#[derive(Clone, Copy, Debug)]
pub struct Judgement {
    /// The task's terms, in task order.
    pub terms: RewardTerms,
    /// The terms fused with the task's weights and rule.
    pub reward: f64,
    /// The task's success predicate holds.
    pub success: bool,
    /// The first object that fell below the floor, if any.
    pub lost: Option<usize>,
}

impl Judgement {
    /// The runtime's outcome: terminated on success (when the task ends on success) or a lost
    /// object; `truncated` is the caller's (it counts the steps).
    pub fn outcome(&self, terminate_on_success: bool, truncated: bool) -> Outcome {
        let terminated = (self.success && terminate_on_success) || self.lost.is_some();
        Outcome {
            reward: self.reward,
            terms: self.terms,
            success: self.success,
            terminated,
            truncated: truncated && !terminated,
        }
    }
}

/// A task's reward terms, success predicate and lost-object check, from observations alone.
/// [`TaskJudge::begin`] takes an episode's first observation (lift is measured from the
/// objects' heights in it); [`TaskJudge::judge`] scores each step after. Allocates nothing
/// after construction.
#[derive(Clone, Debug)]
pub struct TaskJudge {
    spec: RewardSpec,
    success_refs: SuccessRefs,
    term_refs: Vec<TermRef>,
    start_object_z: [f64; MAX_OBJECTS],
    /// Whether the task ends an episode on success.
    pub terminate_on_success: bool,
}

impl TaskJudge {
    /// The judge of `task` (its names were resolved when it was loaded).
    pub fn new(task: &Task) -> Self {
        let pt = |n: &str| task.point(n).unwrap_or(PointRef::Tcp);
        let obj = |n: &str| task.object(n).unwrap_or(0);
        let success_refs = match &task.success {
            SuccessSpec::Near {
                a,
                b,
                tolerance_m,
                xy_only,
            } => SuccessRefs::Near {
                a: pt(a),
                b: pt(b),
                tol: *tolerance_m,
                xy: *xy_only,
            },
            SuccessSpec::Lifted { object, height_m } => SuccessRefs::Lifted {
                object: obj(object),
                height: *height_m,
            },
            SuccessSpec::Inserted {
                peg,
                hole,
                depth_m,
                lateral_tolerance_m,
            } => SuccessRefs::Inserted {
                peg: pt(peg),
                hole: pt(hole),
                depth: *depth_m,
                tol: *lateral_tolerance_m,
            },
        };
        let term_refs = task
            .reward
            .terms
            .iter()
            .map(|t| match &t.kind {
                RewardKind::Success => TermRef::Success,
                RewardKind::Distance {
                    from,
                    to,
                    scale_m,
                    xy_only,
                } => TermRef::Distance {
                    from: pt(from),
                    to: pt(to),
                    scale: *scale_m,
                    xy: *xy_only,
                },
                RewardKind::Lift { object, height_m } => TermRef::Lift {
                    object: obj(object),
                    height: *height_m,
                },
                RewardKind::ActionL2 => TermRef::ActionL2,
            })
            .collect();
        Self {
            spec: task.reward.clone(),
            success_refs,
            term_refs,
            start_object_z: [0.0; MAX_OBJECTS],
            terminate_on_success: task.terminate_on_success,
        }
    }

    /// Starts an episode whose first observation is `first`.
    pub fn begin(&mut self, first: &Observation) {
        for (i, o) in first.objects().iter().enumerate() {
            self.start_object_z[i] = o.pose.position_m[2];
        }
    }

    /// Scores the step that ended in `obs`, in which `action` was executed.
    pub fn judge(&self, obs: &Observation, action: &Action) -> Judgement {
        let success = self.success(obs);
        let mut terms = RewardTerms::new(self.term_refs.len());
        for (i, t) in self.term_refs.iter().enumerate() {
            let v = match *t {
                TermRef::Success => f64::from(u8::from(success)),
                TermRef::Distance {
                    from,
                    to,
                    scale,
                    xy,
                } => 1.0 - (distance(obs, from, to, xy) / scale).tanh(),
                TermRef::Lift { object, height } => {
                    let z = obs.objects[object].pose.position_m[2];
                    ((z - self.start_object_z[object]) / height).clamp(0.0, 1.0)
                }
                TermRef::ActionL2 => {
                    let s = action.as_slice();
                    -(s.iter().map(|v| (v * v) as f64).sum::<f64>() / s.len() as f64)
                }
            };
            terms.set(i, v);
        }
        let lost = obs
            .objects()
            .iter()
            .position(|o| o.pose.position_m[2] < FLOOR_Z_M);
        Judgement {
            reward: self.spec.fuse(&terms),
            terms,
            success,
            lost,
        }
    }

    fn success(&self, obs: &Observation) -> bool {
        match self.success_refs {
            SuccessRefs::Near { a, b, tol, xy } => distance(obs, a, b, xy) < tol,
            SuccessRefs::Lifted { object, height } => {
                let p = obs.objects[object].pose.position_m;
                let tcp = obs.robot.tcp_pose.position_m;
                let held =
                    (0..3).map(|k| (p[k] - tcp[k]).powi(2)).sum::<f64>().sqrt() < HELD_DISTANCE_M;
                p[2] - self.start_object_z[object] >= height && held
            }
            SuccessRefs::Inserted {
                peg,
                hole,
                depth,
                tol,
            } => {
                let (p, h) = (point(obs, peg), point(obs, hole));
                (p[0] - h[0]).hypot(p[1] - h[1]) < tol && p[2] <= h[2] - depth
            }
        }
    }
}

impl reflex_core::StepJudge for TaskJudge {
    fn begin(&mut self, first: &Observation) {
        TaskJudge::begin(self, first);
    }

    fn judge(&mut self, obs: &Observation, action: &Action, truncated: bool) -> Outcome {
        TaskJudge::judge(self, obs, action).outcome(self.terminate_on_success, truncated)
    }

    fn term_names(&self) -> Vec<String> {
        self.spec.terms.iter().map(|t| t.name.clone()).collect()
    }
}

fn point(obs: &Observation, p: PointRef) -> [f64; 3] {
    match p {
        PointRef::Tcp => obs.robot.tcp_pose.position_m,
        PointRef::Keypoint(i) => obs.keypoints_m[i],
        PointRef::Goal(i) => obs.goals_m[i],
    }
}

fn distance(obs: &Observation, a: PointRef, b: PointRef, xy_only: bool) -> f64 {
    let (a, b) = (point(obs, a), point(obs, b));
    let dz = if xy_only { 0.0 } else { a[2] - b[2] };
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + dz * dz).sqrt()
}

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

    /// The judge scores a simulated step exactly as the environment does, from the
    /// observation alone; a cube lifted away from the gripper is not a success, and a cube
    /// below the floor ends the episode.
    #[test]
    fn the_task_judge_agrees_with_the_environment_from_observations_alone() {
        let task = Task::load("pick_cube").unwrap();
        let mut env = crate::Env::new(task.clone()).unwrap();
        let first = env.reset(7).unwrap();
        let mut judge = TaskJudge::new(&task);
        judge.begin(&first);
        let action = Action::zeros(task.action_space);
        for _ in 0..5 {
            let step = env.step(&action).unwrap();
            let j = judge.judge(&step.obs, &action);
            assert_eq!(j.reward, step.reward);
            assert_eq!(j.terms.values(), step.terms.values());
            assert_eq!(j.success, step.info.success);
        }
        let mut obs = *env.observation();
        // Lifted 0.3 m, but 0.3 m from the TCP: not held, not a success; lift term full.
        obs.objects[0].pose.position_m[2] = first.objects[0].pose.position_m[2] + 0.3;
        obs.robot.tcp_pose.position_m = [0.0, 0.0, 1.0];
        let j = judge.judge(&obs, &action);
        assert!(!j.success);
        assert!(j.lost.is_none());
        // Held at the TCP: a success, which ends the episode.
        obs.robot.tcp_pose.position_m = obs.objects[0].pose.position_m;
        let j = judge.judge(&obs, &action);
        assert!(j.success);
        let o = j.outcome(true, false);
        assert!(o.terminated && o.success && !o.truncated);
        // Fallen off the table: terminated, not a success.
        obs.objects[0].pose.position_m[2] = FLOOR_Z_M - 0.1;
        let j = judge.judge(&obs, &action);
        assert_eq!(j.lost, Some(0));
        let o = j.outcome(true, true);
        assert!(o.terminated && !o.truncated && !o.success);
    }
}
