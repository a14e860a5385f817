//! Fixed-size observation, action and command types. Nothing here allocates, so every type can
//! live in a preallocated buffer on the control path.

use serde::{Deserialize, Serialize};

/// Joint slots of the arm (the gripper is commanded separately). A 6-DoF arm fills the first six;
/// the seventh is an inert joint (see [`crate::ArmModel::dof`]).
pub const ARM_DOF: usize = 7;
/// Fewest arm joints a model may have (6-DoF arms such as UR's).
pub const MIN_ARM_DOF: usize = 6;
/// Largest action any action space uses (joint deltas + gripper).
pub const MAX_ACTION_DIM: usize = 8;
/// Offset of the tool position (3 values) in [`Observation::flat`].
pub const FLAT_TCP_POS: usize = 14;
/// Offset of the first object's pose (position 3, quaternion `[x, y, z, w]` 4) in
/// [`Observation::flat`]; object `i` starts at `FLAT_OBJECTS + FLAT_OBJECT_STRIDE * i`.
pub const FLAT_OBJECTS: usize = 22;
/// Values per object in [`Observation::flat`].
pub const FLAT_OBJECT_STRIDE: usize = 7;
/// Largest flat observation vector a task may declare.
pub const MAX_OBS_DIM: usize = 64;
/// Most objects a task may declare.
pub const MAX_OBJECTS: usize = 4;
/// Most named keypoints a task may declare.
pub const MAX_KEYPOINTS: usize = 8;
/// Most goal points a task may declare.
pub const MAX_GOALS: usize = 4;

/// A rigid pose: position in metres and orientation as a unit quaternion `[x, y, z, w]`
/// (the ROS order).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Position, metres.
    pub position_m: [f64; 3],
    /// Unit quaternion, `[x, y, z, w]`.
    pub quat_xyzw: [f64; 4],
}

impl Default for Pose {
    fn default() -> Self {
        Self {
            position_m: [0.0; 3],
            quat_xyzw: [0.0, 0.0, 0.0, 1.0],
        }
    }
}

impl Pose {
    /// Converts to a nalgebra isometry.
    pub fn to_isometry(&self) -> nalgebra::Isometry3<f64> {
        let [x, y, z, w] = self.quat_xyzw;
        nalgebra::Isometry3::from_parts(
            nalgebra::Translation3::new(self.position_m[0], self.position_m[1], self.position_m[2]),
            nalgebra::UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(w, x, y, z)),
        )
    }

    /// Converts from a nalgebra isometry.
    pub fn from_isometry(iso: &nalgebra::Isometry3<f64>) -> Self {
        let q = iso.rotation.quaternion();
        Self {
            position_m: [iso.translation.x, iso.translation.y, iso.translation.z],
            quat_xyzw: [q.i, q.j, q.k, q.w],
        }
    }

    /// True when every component is finite.
    pub fn is_finite(&self) -> bool {
        self.position_m
            .iter()
            .chain(&self.quat_xyzw)
            .all(|v| v.is_finite())
    }
}

/// What a robot reports each tick: measured joints, the tool pose and the gripper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RobotState {
    /// Measured joint positions, radians.
    pub joint_pos_rad: [f64; ARM_DOF],
    /// Measured joint velocities, radians per second.
    pub joint_vel_rad_s: [f64; ARM_DOF],
    /// Measured (or simulated) joint torques, newton metres.
    pub joint_torque_nm: [f64; ARM_DOF],
    /// Tool centre point in the robot base frame.
    pub tcp_pose: Pose,
    /// Distance between the gripper fingers, metres.
    pub gripper_width_m: f64,
    /// Time of the measurement on the robot's clock, nanoseconds.
    pub stamp_ns: u64,
}

impl RobotState {
    /// True when every measured value is finite.
    pub fn is_finite(&self) -> bool {
        self.joint_pos_rad
            .iter()
            .chain(&self.joint_vel_rad_s)
            .chain(&self.joint_torque_nm)
            .all(|v| v.is_finite())
            && self.tcp_pose.is_finite()
            && self.gripper_width_m.is_finite()
    }
}

/// The command a `Robot` executes: joint position setpoints for its impedance controller and a
/// gripper width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointCommand {
    /// Joint position setpoints, radians.
    pub joint_pos_rad: [f64; ARM_DOF],
    /// Gripper width setpoint, metres.
    pub gripper_width_m: f64,
}

/// How a policy's action is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpace {
    /// `[dx, dy, dz, droll, dpitch, dyaw, gripper]`, each in [-1, 1], scaled by the task's
    /// maximum translation and rotation per policy step; gripper -1 closed, +1 open.
    #[default]
    EeDelta,
    /// `[dq1 .. dq7, gripper]`, each in [-1, 1], scaled by the task's maximum joint step.
    JointDelta,
}

impl ActionSpace {
    /// Number of action components.
    pub const fn dim(self) -> usize {
        match self {
            ActionSpace::EeDelta => 7,
            ActionSpace::JointDelta => 8,
        }
    }
}

/// A normalised action (components in [-1, 1]); `dim` of the `MAX_ACTION_DIM` slots are used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Action {
    values: [f32; MAX_ACTION_DIM],
    dim: usize,
}

impl Default for Action {
    /// A zero action of the default space (end-effector deltas).
    fn default() -> Self {
        Self::zeros(ActionSpace::default())
    }
}

impl Action {
    /// A zero action for the given space.
    pub const fn zeros(space: ActionSpace) -> Self {
        Self {
            values: [0.0; MAX_ACTION_DIM],
            dim: space.dim(),
        }
    }

    /// The used components.
    pub fn as_slice(&self) -> &[f32] {
        &self.values[..self.dim]
    }

    /// The used components, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.values[..self.dim]
    }

    /// Number of used components.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Copies from a slice of the same length. Returns false (and changes nothing) otherwise.
    pub fn copy_from(&mut self, src: &[f32]) -> bool {
        if src.len() != self.dim {
            return false;
        }
        self.values[..self.dim].copy_from_slice(src);
        true
    }

    /// Replaces each non-finite component by what holds its last command, and clamps every
    /// component to [-1, 1]: the motion components are deltas, so 0 holds the setpoint where it
    /// is; the gripper (the last component) is absolute, so it keeps `last`'s value (a zero
    /// would half-open it). `last` is the action executed before; if it has another length or
    /// is itself non-finite, the gripper gets 0. Returns how many components were non-finite.
    pub fn sanitize_holding(&mut self, last: &Action) -> usize {
        let mut bad = 0;
        let dim = self.dim;
        let gripper = if last.dim == dim && dim > 0 && last.values[dim - 1].is_finite() {
            last.values[dim - 1].clamp(-1.0, 1.0)
        } else {
            0.0
        };
        for (i, v) in self.as_mut_slice().iter_mut().enumerate() {
            if !v.is_finite() {
                *v = if i + 1 == dim { gripper } else { 0.0 };
                bad += 1;
            } else {
                *v = v.clamp(-1.0, 1.0);
            }
        }
        bad
    }

    /// Replaces non-finite components by zero and clamps the rest to [-1, 1] (for stateless
    /// callers; the control loop holds instead, see [`Action::sanitize_holding`]).
    /// Returns how many components were non-finite.
    pub fn sanitize(&mut self) -> usize {
        let mut bad = 0;
        for v in self.as_mut_slice() {
            if !v.is_finite() {
                *v = 0.0;
                bad += 1;
            } else {
                *v = v.clamp(-1.0, 1.0);
            }
        }
        bad
    }
}

/// A fixed-capacity f32 vector: the flat observation a network reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlatObs {
    values: [f32; MAX_OBS_DIM],
    len: usize,
}

impl Default for FlatObs {
    fn default() -> Self {
        Self {
            values: [0.0; MAX_OBS_DIM],
            len: 0,
        }
    }
}

impl FlatObs {
    /// Empties the vector without touching the storage.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends values; returns false (appending nothing) if they would not fit.
    pub fn extend_from(&mut self, src: &[f32]) -> bool {
        if self.len + src.len() > MAX_OBS_DIM {
            return false;
        }
        self.values[self.len..self.len + src.len()].copy_from_slice(src);
        self.len += src.len();
        true
    }

    /// The used values.
    pub fn as_slice(&self) -> &[f32] {
        &self.values[..self.len]
    }

    /// Number of used values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no value is used.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Pose and velocity of one task object (privileged simulator state, or a tracker's estimate).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ObjectState {
    /// Pose in the robot base frame.
    pub pose: Pose,
    /// Linear velocity, metres per second.
    pub lin_vel_m_s: [f64; 3],
}

/// Everything a policy may look at in one step. Fixed size; cameras travel separately.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// The robot's measured state.
    pub robot: RobotState,
    /// Task objects, in task-file order; `num_objects` are valid.
    pub objects: [ObjectState; MAX_OBJECTS],
    /// Number of valid entries in `objects`.
    pub num_objects: usize,
    /// Named keypoints in the base frame, metres, in task-file order.
    pub keypoints_m: [[f64; 3]; MAX_KEYPOINTS],
    /// Number of valid entries in `keypoints_m`.
    pub num_keypoints: usize,
    /// Goal points of this episode in the base frame, metres, in task-file order.
    pub goals_m: [[f64; 3]; MAX_GOALS],
    /// Number of valid entries in `goals_m`.
    pub num_goals: usize,
    /// The flat vector a network reads (layout documented by the task).
    pub flat: FlatObs,
    /// Policy steps since the episode started.
    pub step: u64,
}

impl Observation {
    /// The valid objects.
    pub fn objects(&self) -> &[ObjectState] {
        &self.objects[..self.num_objects]
    }

    /// The valid keypoints.
    pub fn keypoints(&self) -> &[[f64; 3]] {
        &self.keypoints_m[..self.num_keypoints]
    }

    /// The valid goals.
    pub fn goals(&self) -> &[[f64; 3]] {
        &self.goals_m[..self.num_goals]
    }

    /// Rebuilds [`Observation::flat`] from the structured fields, in the one layout every
    /// network reads, in simulation and on hardware alike: joint positions (7), joint velocities
    /// (7), tool position (3), tool quaternion `[x, y, z, w]` with `w >= 0` (4), gripper width
    /// (1); then per object position and quaternion (7), per keypoint position (3), per goal
    /// position (3). Returns false if a value is non-finite (the vector is still filled).
    pub fn rebuild_flat(&mut self) -> bool {
        let f = &mut self.flat;
        f.clear();
        let as32 = |v: &[f64], out: &mut [f32]| {
            for (d, s) in out.iter_mut().zip(v) {
                *d = *s as f32;
            }
        };
        let r = &self.robot;
        let mut buf = [0f32; 8];
        as32(&r.joint_pos_rad, &mut buf[..7]);
        f.extend_from(&buf[..7]);
        as32(&r.joint_vel_rad_s, &mut buf[..7]);
        f.extend_from(&buf[..7]);
        as32(&r.tcp_pose.position_m, &mut buf[..3]);
        f.extend_from(&buf[..3]);
        as32(&canonical_quat(r.tcp_pose.quat_xyzw), &mut buf[..4]);
        f.extend_from(&buf[..4]);
        f.extend_from(&[r.gripper_width_m as f32]);
        for obj in &self.objects[..self.num_objects] {
            as32(&obj.pose.position_m, &mut buf[..3]);
            as32(&canonical_quat(obj.pose.quat_xyzw), &mut buf[3..7]);
            f.extend_from(&buf[..7]);
        }
        for k in &self.keypoints_m[..self.num_keypoints] {
            as32(k, &mut buf[..3]);
            f.extend_from(&buf[..3]);
        }
        for g in &self.goals_m[..self.num_goals] {
            as32(g, &mut buf[..3]);
            f.extend_from(&buf[..3]);
        }
        f.as_slice().iter().all(|v| v.is_finite())
    }

    /// The observation a flat vector describes (the inverse of [`Observation::rebuild_flat`],
    /// up to `f32` precision): for a client that only sees the flat vector, such as a
    /// scripted operator reading the teleop page's status. Object velocities are not in the
    /// vector and come back zero. `None` when the length does not match the counts or a count
    /// is over its maximum.
    pub fn from_flat(
        flat: &[f32],
        num_objects: usize,
        num_keypoints: usize,
        num_goals: usize,
    ) -> Option<Self> {
        if num_objects > MAX_OBJECTS
            || num_keypoints > MAX_KEYPOINTS
            || num_goals > MAX_GOALS
            || flat.len() != Self::flat_len(num_objects, num_keypoints, num_goals)
        {
            return None;
        }
        let mut o = Self::default();
        let mut at = 0usize;
        let mut take = |out: &mut [f64]| {
            for d in out.iter_mut() {
                *d = f64::from(flat[at]);
                at += 1;
            }
        };
        let r = &mut o.robot;
        take(&mut r.joint_pos_rad);
        take(&mut r.joint_vel_rad_s);
        take(&mut r.tcp_pose.position_m);
        take(&mut r.tcp_pose.quat_xyzw);
        let mut w = [0.0];
        take(&mut w);
        r.gripper_width_m = w[0];
        for obj in &mut o.objects[..num_objects] {
            take(&mut obj.pose.position_m);
            take(&mut obj.pose.quat_xyzw);
        }
        for k in &mut o.keypoints_m[..num_keypoints] {
            take(k);
        }
        for g in &mut o.goals_m[..num_goals] {
            take(g);
        }
        o.num_objects = num_objects;
        o.num_keypoints = num_keypoints;
        o.num_goals = num_goals;
        o.flat.extend_from(flat);
        Some(o)
    }

    /// Length of the flat vector for a scene with these counts.
    pub const fn flat_len(num_objects: usize, num_keypoints: usize, num_goals: usize) -> usize {
        FLAT_OBJECTS + FLAT_OBJECT_STRIDE * num_objects + 3 * num_keypoints + 3 * num_goals
    }
}

/// Quaternion `[x, y, z, w]` with `w >= 0` (q and -q are the same rotation).
fn canonical_quat(q: [f64; 4]) -> [f64; 4] {
    if q[3] < 0.0 {
        q.map(|v| -v)
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_non_finite_and_clamps() {
        let mut a = Action::zeros(ActionSpace::EeDelta);
        assert!(a.copy_from(&[f32::NAN, 2.0, -3.0, 0.5, f32::INFINITY, 0.0, -0.25]));
        assert_eq!(a.sanitize(), 2);
        assert_eq!(a.as_slice(), &[0.0, 1.0, -1.0, 0.5, 0.0, 0.0, -0.25]);
    }

    #[test]
    fn a_non_finite_component_holds_and_never_half_opens_the_gripper() {
        let mut last = Action::zeros(ActionSpace::EeDelta);
        assert!(last.copy_from(&[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, -1.0]));
        let mut a = Action::zeros(ActionSpace::EeDelta);
        assert!(a.copy_from(&[f32::NAN, 0.5, 2.0, 0.0, 0.0, f32::INFINITY, f32::NAN]));
        assert_eq!(a.sanitize_holding(&last), 3);
        assert_eq!(a.as_slice(), &[0.0, 0.5, 1.0, 0.0, 0.0, 0.0, -1.0]);
    }

    #[test]
    fn action_rejects_wrong_length() {
        let mut a = Action::zeros(ActionSpace::JointDelta);
        assert!(!a.copy_from(&[0.0; 7]));
        assert_eq!(a.dim(), 8);
    }

    #[test]
    fn flat_obs_refuses_overflow() {
        let mut o = FlatObs::default();
        assert!(o.extend_from(&[1.0; 60]));
        assert!(!o.extend_from(&[1.0; 5]));
        assert_eq!(o.len(), 60);
    }

    #[test]
    fn from_flat_inverts_rebuild_flat() {
        let mut o = Observation::default();
        for (i, q) in o.robot.joint_pos_rad.iter_mut().enumerate() {
            *q = 0.1 * i as f64 - 0.3;
        }
        o.robot.joint_vel_rad_s[2] = 0.25;
        o.robot.tcp_pose.position_m = [0.5, -0.1, 0.2];
        o.robot.tcp_pose.quat_xyzw = [1.0, 0.0, 0.0, 0.0];
        o.robot.gripper_width_m = 0.04;
        o.num_objects = 2;
        o.objects[1].pose.position_m = [0.6, 0.1, 0.03];
        o.objects[1].pose.quat_xyzw = [0.0, 0.0, 0.6, 0.8];
        o.objects[0].pose.quat_xyzw = [0.0, 0.0, 0.0, 1.0];
        o.num_keypoints = 1;
        o.keypoints_m[0] = [0.55, 0.0, 0.1];
        o.num_goals = 1;
        o.goals_m[0] = [0.4, 0.2, 0.25];
        assert!(o.rebuild_flat());
        let back = Observation::from_flat(o.flat.as_slice(), 2, 1, 1).expect("length fits");
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&back.robot.joint_pos_rad, &o.robot.joint_pos_rad));
        assert!(close(&back.robot.joint_vel_rad_s, &o.robot.joint_vel_rad_s));
        assert!(close(
            &back.robot.tcp_pose.position_m,
            &o.robot.tcp_pose.position_m
        ));
        assert!(close(
            &back.robot.tcp_pose.quat_xyzw,
            &o.robot.tcp_pose.quat_xyzw
        ));
        assert!((back.robot.gripper_width_m - 0.04).abs() < 1e-6);
        assert!(close(
            &back.objects[1].pose.position_m,
            &o.objects[1].pose.position_m
        ));
        assert!(close(
            &back.objects[1].pose.quat_xyzw,
            &o.objects[1].pose.quat_xyzw
        ));
        assert!(close(&back.keypoints()[0], &o.keypoints_m[0]));
        assert!(close(&back.goals()[0], &o.goals_m[0]));
        assert_eq!(back.flat.as_slice(), o.flat.as_slice());
        // A length that does not fit the counts is refused.
        assert!(Observation::from_flat(o.flat.as_slice(), 1, 1, 1).is_none());
        assert!(Observation::from_flat(&o.flat.as_slice()[1..], 2, 1, 1).is_none());
    }

    #[test]
    fn pose_round_trips_through_isometry() {
        let p = Pose {
            position_m: [0.1, -0.2, 0.3],
            quat_xyzw: [0.0, 0.0, (0.5f64).sin(), (0.5f64).cos()],
        };
        let back = Pose::from_isometry(&p.to_isometry());
        for (a, b) in p.position_m.iter().zip(&back.position_m) {
            assert!((a - b).abs() < 1e-12);
        }
        for (a, b) in p.quat_xyzw.iter().zip(&back.quat_xyzw) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
