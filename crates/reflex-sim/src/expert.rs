//! Scripted experts: one per kind of success predicate (reach, push, pick, insert), reading the
//! privileged observation (object poses, keypoints, goals). They provide demonstrations for
//! behaviour cloning and a base policy to compare against.
//!
//! Each expert decides a tool velocity and a gripper command; the same velocity becomes a
//! normalised end-effector action or, through the damped least-squares inverse, a joint action.

use crate::task::{PointRef, SuccessSpec, Task};
use nalgebra::{Matrix6, SMatrix, UnitQuaternion, Vector3, Vector6};
use reflex_core::{Action, ActionSpace, ArmModel, Frames, Jacobian, Observation, Policy, ARM_DOF};
use std::f64::consts::{FRAC_PI_2, PI};

/// Which behaviour the expert runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Skill {
    /// Move the TCP to a goal.
    Reach { goal: PointRef },
    /// Push an object (tracked by a keypoint) to a goal on the table.
    Push {
        object: usize,
        point: PointRef,
        goal: PointRef,
    },
    /// Grasp an object and lift it.
    Pick { object: usize, height_m: f64 },
    /// Grasp a peg and insert it into a hole.
    Insert {
        peg_object: usize,
        peg: PointRef,
        hole: PointRef,
        depth_m: f64,
    },
}

/// A scripted expert for a task.
#[derive(Clone, Debug)]
pub struct ScriptedExpert {
    skill: Skill,
    space: ActionSpace,
    max_lin_m_s: f64,
    max_ang_rad_s: f64,
    max_joint_rad_s: f64,
    period_s: f64,
    model: ArmModel,
    phase: u8,
    timer: u32,
    /// Gripper yaw the arm starts at (the expert prefers grasps near it).
    neutral_yaw: Option<f64>,
    goals: [[f64; 3]; reflex_core::MAX_GOALS],
    frames: Frames,
    jac: Jacobian,
    /// Object half-extents along x (from the task), metres.
    object_half_m: Vec<f64>,
    object_height_m: Vec<f64>,
    /// The tool target of the last step it acted on, metres in the base frame.
    last_target_m: [f64; 3],
}

impl ScriptedExpert {
    /// The expert for `task`, chosen from its success predicate.
    pub fn new(task: &Task, model: &ArmModel) -> Self {
        let pt = |n: &str| task.point(n).unwrap_or(PointRef::Tcp);
        let object_of = |p: PointRef| match p {
            PointRef::Keypoint(i) => task.object(&task.keypoints[i].object).unwrap_or(0),
            _ => 0,
        };
        let skill = match &task.success {
            SuccessSpec::Near { a, b, .. } => match (pt(a), pt(b)) {
                (PointRef::Tcp, g) | (g, PointRef::Tcp) => Skill::Reach { goal: g },
                (p, g) => Skill::Push {
                    object: object_of(p),
                    point: p,
                    goal: g,
                },
            },
            SuccessSpec::Lifted { object, height_m } => Skill::Pick {
                object: task.object(object).unwrap_or(0),
                height_m: *height_m,
            },
            SuccessSpec::Inserted {
                peg, hole, depth_m, ..
            } => Skill::Insert {
                peg_object: object_of(pt(peg)),
                peg: pt(peg),
                hole: pt(hole),
                depth_m: *depth_m,
            },
        };
        Self {
            skill,
            space: task.action_space,
            max_lin_m_s: task.control.max_linear_speed_m_s,
            max_ang_rad_s: task.control.max_angular_speed_rad_s,
            max_joint_rad_s: task.control.max_joint_speed_rad_s,
            period_s: 1.0 / task.control_rate_hz,
            model: model.clone(),
            phase: 0,
            timer: 0,
            neutral_yaw: None,
            goals: [[0.0; 3]; reflex_core::MAX_GOALS],
            frames: Frames::default(),
            jac: Jacobian::zeros(),
            object_half_m: task
                .objects
                .iter()
                .map(|o| 0.5 * o.shape.footprint_radius_m() * std::f64::consts::SQRT_2)
                .collect(),
            object_height_m: task
                .objects
                .iter()
                .map(|o| 2.0 * o.shape.half_height_m())
                .collect(),
            last_target_m: [0.0; 3],
        }
    }

    /// The stage of its plan the expert is in (0 at the start of an episode; each skill
    /// counts its own stages). A watcher can tell progress from a stall by it.
    pub fn phase(&self) -> u8 {
        self.phase
    }

    /// Where the expert wanted the tool at the last step it acted on, metres in the base
    /// frame.
    pub fn target_m(&self) -> [f64; 3] {
        self.last_target_m
    }

    fn point(&self, obs: &Observation, p: PointRef) -> Vector3<f64> {
        match p {
            PointRef::Tcp => Vector3::from(obs.robot.tcp_pose.position_m),
            PointRef::Keypoint(i) => Vector3::from(obs.keypoints_m[i]),
            PointRef::Goal(i) => Vector3::from(self.goals[i]),
        }
    }

    /// Plans the next tool target, yaw, gripper command and speed factor.
    fn plan(&mut self, obs: &Observation) -> Plan {
        let tcp = Vector3::from(obs.robot.tcp_pose.position_m);
        let tcp_yaw = yaw_of(obs.robot.tcp_pose.quat_xyzw);
        let neutral = *self.neutral_yaw.get_or_insert(tcp_yaw);
        let near = |a: &Vector3<f64>, b: &Vector3<f64>, tol: f64| (a - b).norm() < tol;
        self.timer += 1;
        match self.skill {
            Skill::Reach { goal } => (self.point(obs, goal), neutral, 1.0, 1.0),
            Skill::Push {
                object,
                point,
                goal,
            } => {
                let c = self.point(obs, point);
                let g = self.point(obs, goal);
                let mut dir = Vector3::new(g.x - c.x, g.y - c.y, 0.0);
                let dist = dir.norm();
                if dist > 1e-6 {
                    dir /= dist;
                }
                let reach = self.object_half_m[object] * std::f64::consts::SQRT_2 + 0.015;
                let push_z = 0.015;
                let behind = c - dir * (reach + 0.03);
                // Lateral offset of the tool from the line through the object along dir.
                let rel = Vector3::new(tcp.x - c.x, tcp.y - c.y, 0.0);
                let lateral = (rel - dir * rel.dot(&dir)).norm();
                let yaw = neutral;
                match self.phase {
                    0 => {
                        let t = Vector3::new(behind.x, behind.y, 0.10);
                        if near(&tcp, &t, 0.015) {
                            self.phase = 1;
                        }
                        (t, yaw, -1.0, 1.0)
                    }
                    1 => {
                        let t = Vector3::new(behind.x, behind.y, push_z);
                        if near(&tcp, &t, 0.01) {
                            self.phase = 2;
                        }
                        (t, yaw, -1.0, 1.0)
                    }
                    2 => {
                        if lateral > 0.025 || rel.dot(&dir) > 0.0 {
                            self.phase = 3;
                        }
                        // Aim at the point behind the object on the line to the goal, moved
                        // forward: the tool both pushes and slides back onto the line.
                        let ahead = dist.clamp(0.0, 0.06);
                        let contact = c - dir * reach;
                        let t = Vector3::new(contact.x, contact.y, push_z) + dir * ahead;
                        (t, yaw, -1.0, 0.5)
                    }
                    _ => {
                        // Back off upward, then approach again.
                        let t = Vector3::new(tcp.x, tcp.y, 0.10) - dir * 0.02;
                        if tcp.z > 0.08 {
                            self.phase = 0;
                        }
                        (t, yaw, -1.0, 1.0)
                    }
                }
            }
            Skill::Pick { object, height_m } => {
                let o = Vector3::from(obs.objects[object].pose.position_m);
                let grasp_yaw =
                    nearest_symmetric(yaw_of(obs.objects[object].pose.quat_xyzw), neutral);
                let grasp_z = (o.z - 0.3 * self.object_height_m[object]).max(0.008);
                let width = obs.robot.gripper_width_m;
                let grasp = Vector3::new(o.x, o.y, grasp_z);
                let above = o + Vector3::new(0.0, 0.0, 0.10);
                if let Some(plan) =
                    self.grasp(&tcp, tcp_yaw, above, grasp, grasp_yaw, PICK_TOLERANCES)
                {
                    return plan;
                }
                // Lift; start over if the fingers closed on nothing.
                if width < 0.005 {
                    self.phase = 0;
                }
                let t = Vector3::new(tcp.x, tcp.y, o.z.max(grasp_z) + height_m + 0.08);
                (t, grasp_yaw, -1.0, 0.6)
            }
            Skill::Insert {
                peg_object,
                peg,
                hole,
                depth_m,
            } => {
                let p = self.point(obs, peg);
                let h = self.point(obs, hole);
                let peg_center = Vector3::from(obs.objects[peg_object].pose.position_m);
                let peg_top = peg_center + (peg_center - p);
                let peg_yaw = yaw_of(obs.objects[peg_object].pose.quat_xyzw);
                let grasp_yaw = nearest_symmetric(peg_yaw, neutral);
                let grasp_z = peg_top.z - 0.03;
                let width = obs.robot.gripper_width_m;
                // After the grasp, turn so the peg's faces line up with the hole's (yaw 0).
                let aligned_yaw = tcp_yaw - wrap(peg_yaw, FRAC_PI_2);
                let grasp = Vector3::new(peg_top.x, peg_top.y, grasp_z);
                let above = Vector3::new(peg_top.x, peg_top.y, peg_top.z + 0.08);
                if let Some(plan) =
                    self.grasp(&tcp, tcp_yaw, above, grasp, grasp_yaw, PEG_TOLERANCES)
                {
                    return plan;
                }
                match self.phase {
                    3 => {
                        if width < 0.004 {
                            self.phase = 0;
                        }
                        // Lift so the peg bottom clears the hole's top by 4 cm.
                        let t = tcp + Vector3::new(0.0, 0.0, h.z + 0.04 - p.z);
                        if (h.z + 0.04 - p.z).abs() < 0.01 {
                            self.phase = 4;
                        }
                        (t, aligned_yaw, -1.0, 0.8)
                    }
                    4 => {
                        let t = tcp + Vector3::new(h.x - p.x, h.y - p.y, h.z + 0.03 - p.z);
                        if (h.x - p.x).hypot(h.y - p.y) < 0.0015
                            && wrap(peg_yaw, FRAC_PI_2).abs() < 0.03
                        {
                            self.phase = 5;
                        }
                        (t, aligned_yaw, -1.0, 0.4)
                    }
                    _ => {
                        if width < 0.004 {
                            self.phase = 0;
                        }
                        let t =
                            tcp + Vector3::new(h.x - p.x, h.y - p.y, -(depth_m + 0.01).min(0.02));
                        (t, aligned_yaw, -1.0, 0.25)
                    }
                }
            }
        }
    }
}

/// How close the grasp phases must get before moving on: (above the object m, yaw rad, at the
/// grasp point m).
#[derive(Clone, Copy)]
struct GraspTolerances {
    above_m: f64,
    yaw_rad: f64,
    grasp_m: f64,
}

const PICK_TOLERANCES: GraspTolerances = GraspTolerances {
    above_m: 0.02,
    yaw_rad: 0.08,
    grasp_m: 0.008,
};

/// The peg needs a centred grasp: 2 mm of clearance per side in the hole.
const PEG_TOLERANCES: GraspTolerances = GraspTolerances {
    above_m: 0.015,
    yaw_rad: 0.05,
    grasp_m: 0.006,
};

/// (tool target position, target yaw, gripper command in [-1, 1], speed factor).
type Plan = (Vector3<f64>, f64, f64, f64);

impl ScriptedExpert {
    /// The grasp every pick starts with: over the object with the fingers open and turned to
    /// `yaw`, down to `grasp`, then close for four steps. Returns the plan while grasping
    /// (phases 0 to 2) and `None` once the fingers have closed.
    fn grasp(
        &mut self,
        tcp: &Vector3<f64>,
        tcp_yaw: f64,
        above: Vector3<f64>,
        grasp: Vector3<f64>,
        yaw: f64,
        tol: GraspTolerances,
    ) -> Option<Plan> {
        match self.phase {
            0 => {
                if (tcp - above).norm() < tol.above_m && (tcp_yaw - yaw).abs() < tol.yaw_rad {
                    self.phase = 1;
                }
                Some((above, yaw, 1.0, 1.0))
            }
            1 => {
                if (tcp - grasp).norm() < tol.grasp_m {
                    self.phase = 2;
                    self.timer = 0;
                }
                Some((grasp, yaw, 1.0, 0.6))
            }
            2 => {
                if self.timer >= 4 {
                    self.phase = 3;
                }
                Some((grasp, yaw, -1.0, 0.5))
            }
            _ => None,
        }
    }
}

impl Policy for ScriptedExpert {
    fn reset(&mut self) {
        self.phase = 0;
        self.timer = 0;
        self.neutral_yaw = None;
    }

    fn act(&mut self, obs: &Observation, action: &mut Action) {
        for (d, s) in self.goals.iter_mut().zip(obs.goals()) {
            *d = *s;
        }
        let (target, yaw, grip, speed) = self.plan(obs);
        self.last_target_m = target.into();
        let tcp = obs.robot.tcp_pose;
        let t = self.period_s;
        // Tool velocity that would reach the target within one period, scaled down so the
        // largest component stays within the speed limit (keeps the direction).
        let mut v = (target - Vector3::from(tcp.position_m)) / t;
        let vmax = self.max_lin_m_s * speed;
        let m = v.amax();
        if m > vmax {
            v *= vmax / m;
        }
        // Orientation: gripper pointing down, at `yaw`.
        let want = UnitQuaternion::from_euler_angles(PI, 0.0, 0.0);
        let want = UnitQuaternion::from_euler_angles(0.0, 0.0, yaw) * want;
        let have = reflex_core::Pose {
            position_m: [0.0; 3],
            quat_xyzw: tcp.quat_xyzw,
        }
        .to_isometry()
        .rotation;
        let mut w = (want * have.inverse()).scaled_axis() / t;
        let wmax = self.max_ang_rad_s;
        let m = w.amax();
        if m > wmax {
            w *= wmax / m;
        }
        let out = action.as_mut_slice();
        match self.space {
            ActionSpace::EeDelta => {
                for k in 0..3 {
                    out[k] = (v[k] / self.max_lin_m_s).clamp(-1.0, 1.0) as f32;
                    out[k + 3] = (w[k] / self.max_ang_rad_s).clamp(-1.0, 1.0) as f32;
                }
                out[6] = grip as f32;
            }
            ActionSpace::JointDelta => {
                self.model
                    .forward(&obs.robot.joint_pos_rad, &mut self.frames);
                self.model.jacobian(&self.frames, &mut self.jac);
                let j = &self.jac;
                let jjt: Matrix6<f64> = j * j.transpose() + Matrix6::identity() * 1e-3;
                let twist = Vector6::new(v.x, v.y, v.z, w.x, w.y, w.z);
                let dq: SMatrix<f64, ARM_DOF, 1> = match jjt.cholesky() {
                    Some(c) => j.transpose() * c.solve(&twist),
                    None => SMatrix::zeros(),
                };
                for i in 0..ARM_DOF {
                    out[i] = (dq[i] / self.max_joint_rad_s).clamp(-1.0, 1.0) as f32;
                }
                out[7] = grip as f32;
            }
        }
    }
}

/// Yaw (rotation about world z) of a quaternion `[x, y, z, w]`, for frames whose z is vertical
/// (objects) or pointing down (the tool): the heading of the frame's x axis.
fn yaw_of(q: [f64; 4]) -> f64 {
    let r = reflex_core::Pose {
        position_m: [0.0; 3],
        quat_xyzw: q,
    }
    .to_isometry()
    .rotation;
    let x = r * Vector3::x();
    x.y.atan2(x.x)
}

/// Wraps `a` into [-period/2, period/2).
fn wrap(a: f64, period: f64) -> f64 {
    (a + 0.5 * period).rem_euclid(period) - 0.5 * period
}

/// The yaw equivalent to `object_yaw` under 90-degree symmetry that is nearest `reference`.
fn nearest_symmetric(object_yaw: f64, reference: f64) -> f64 {
    reference + wrap(object_yaw - reference, FRAC_PI_2)
}

/// Runs the task's scripted expert for `episodes` episodes (seeds `first_seed..`) with a
/// different amount of Gaussian action noise in each, cycling through five levels from none to
/// 0.6 (which rarely finishes), so a collection holds successes and episodes that stall
/// part-way: what labelled frames for reward models are drawn from. After every step `visit`
/// sees the episode index, the environment (to render) and the step; it returns whether the
/// episode goes on. The expert's noise comes from `rng`.
pub fn noisy_expert_episodes(
    task: &Task,
    episodes: usize,
    first_seed: u64,
    rng: &mut crate::rng::Rng,
    mut visit: impl FnMut(usize, &crate::Env, &crate::Step) -> Result<bool, String>,
) -> Result<(), String> {
    let mut env = crate::Env::new(task.clone()).map_err(|e| e.to_string())?;
    let mut expert = ScriptedExpert::new(task, env.model());
    let mut action = Action::zeros(task.action_space);
    for ep in 0..episodes {
        let mut obs = env
            .reset(first_seed + ep as u64)
            .map_err(|e| e.to_string())?;
        expert.reset();
        let noise = 0.6 * (ep % 5) as f64 / 4.0;
        loop {
            expert.act(&obs, &mut action);
            let mut a = action;
            for v in a.as_mut_slice() {
                *v = (*v + (rng.normal() * noise) as f32).clamp(-1.0, 1.0);
            }
            let step = env.step(&a).map_err(|e| e.to_string())?;
            obs = step.obs;
            if !visit(ep, &env, &step)? {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::FRAC_PI_4;

    #[test]
    fn symmetric_yaw_stays_within_45_degrees() {
        for k in -20..20 {
            let obj = k as f64 * 0.37;
            let y = nearest_symmetric(obj, 0.3);
            assert!((y - 0.3).abs() <= FRAC_PI_4 + 1e-12);
            assert!(wrap(y - obj, FRAC_PI_2).abs() < 1e-9);
        }
    }
}
