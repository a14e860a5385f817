//! The arm's kinematic and inertial model, read from a URDF: forward kinematics, the geometric
//! Jacobian of the tool centre point, and gravity torques for compensation.
//!
//! The simulator's controllers and the real-robot bridges use this same model, so an
//! end-effector action means the same joint motion everywhere. All queries write into caller
//! buffers and allocate nothing.

use crate::types::{ARM_DOF, MIN_ARM_DOF};
use nalgebra::{Isometry3, SMatrix, Translation3, UnitQuaternion, Vector3};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// 6 x 7 geometric Jacobian: rows are linear (x, y, z) then angular (x, y, z) velocity.
pub type Jacobian = SMatrix<f64, 6, ARM_DOF>;

/// Errors building a model from a URDF. Each names the file and the element at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("{path}: cannot read URDF: {source}")]
    Io {
        /// The URDF file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The XML is not a valid URDF.
    #[error("{path}: invalid URDF: {message}")]
    Parse {
        /// The URDF file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The URDF is well formed but does not describe the arm we need.
    #[error("{path}: {element}: {message}")]
    Structure {
        /// The URDF file.
        path: PathBuf,
        /// The link or joint at fault, e.g. `joint "joint4"`.
        element: String,
        /// What was expected.
        message: String,
    },
}

/// Position, velocity and effort limits of one joint, from its `<limit>` element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JointLimits {
    /// Lower position limit, radians (metres for prismatic joints).
    pub lower: f64,
    /// Upper position limit, radians (metres for prismatic joints).
    pub upper: f64,
    /// Velocity limit, rad/s (m/s for prismatic joints).
    pub velocity: f64,
    /// Effort limit, N m (N for prismatic joints).
    pub effort: f64,
}

#[derive(Clone, Debug)]
struct ChainJoint {
    /// Pose of the joint frame in the previous chain link's frame (at q = 0).
    origin: Isometry3<f64>,
    /// Rotation axis in the joint frame (unit; zero for an inert slot).
    axis: Vector3<f64>,
    /// Mass carried by the child link, including every rigidly attached descendant off the chain.
    mass_kg: f64,
    /// Centre of that mass in the child link frame.
    com: Vector3<f64>,
}

/// The parallel-jaw gripper: two prismatic finger joints, the width is their sum.
#[derive(Clone, Debug, PartialEq)]
pub struct GripperModel {
    /// Names of the finger joints.
    pub finger_joints: [String; 2],
    /// Limits of one finger (the width limit is twice these).
    pub finger_limits: JointLimits,
}

impl GripperModel {
    /// Widest opening, metres.
    pub fn max_width_m(&self) -> f64 {
        2.0 * self.finger_limits.upper
    }
}

/// Joint-space kinematic and inertial model of a 6- or 7-DoF arm plus gripper.
///
/// A 6-DoF arm fills the first six of the [`ARM_DOF`] joint slots; the seventh is inert: no
/// name, no axis (it moves no frame, its Jacobian column is zero, it carries no mass), limits of
/// [`INERT_JOINT_LIMITS`]. Whatever a loop commands it, nothing moves; a robot reports it at 0 and
/// never sends it to the arm.
#[derive(Clone, Debug)]
pub struct ArmModel {
    /// Names of the arm joints, base to tip (the inert slot's is empty).
    pub joint_names: [String; ARM_DOF],
    /// Their limits.
    pub limits: [JointLimits; ARM_DOF],
    /// How many of the slots are real joints: 6 or 7.
    pub dof: usize,
    /// The link the chain starts at (fixed to the world).
    pub base_link: String,
    /// The tool-centre-point link.
    pub tcp_link: String,
    /// The gripper, if the URDF has two prismatic finger joints under the tool.
    pub gripper: Option<GripperModel>,
    /// The two fingertips at the gripper's widest opening, in the tool-centre-point frame
    /// (metres): each finger joint's origin carried along its axis to its upper limit, at the
    /// TCP's depth. Both are the TCP itself when there is no gripper.
    pub fingertips_in_tcp_m: [Vector3<f64>; 2],
    joints: [ChainJoint; ARM_DOF],
    /// Pose of the TCP in the last chain link's frame.
    tcp_offset: Isometry3<f64>,
}

/// Points of the arm the safety envelope checks: the origins of the seven links the joints
/// move, the tool centre point and the two fingertips (see [`ArmModel::envelope_points`]).
pub const ENVELOPE_POINTS: usize = ARM_DOF + 3;

/// Frames computed by forward kinematics.
#[derive(Clone, Copy, Debug)]
pub struct Frames {
    /// Pose of each joint's child link in the base frame.
    pub links: [Isometry3<f64>; ARM_DOF],
    /// Pose of the TCP in the base frame.
    pub tcp: Isometry3<f64>,
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            links: [Isometry3::identity(); ARM_DOF],
            tcp: Isometry3::identity(),
        }
    }
}

/// Limits of a 6-DoF arm's inert seventh joint: wide enough for any margin, slow.
pub const INERT_JOINT_LIMITS: JointLimits = JointLimits {
    lower: -1.0,
    upper: 1.0,
    velocity: 1.0,
    effort: 1.0,
};

fn origin_to_isometry(o: &urdf_rs::Pose) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(o.xyz[0], o.xyz[1], o.xyz[2]),
        UnitQuaternion::from_euler_angles(o.rpy[0], o.rpy[1], o.rpy[2]),
    )
}

impl ArmModel {
    /// Reads the URDF at `path` and extracts the chain from `base_link` to `tcp_link`.
    pub fn from_urdf_file(
        path: &Path,
        base_link: &str,
        tcp_link: &str,
    ) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_urdf_str(&text, path, base_link, tcp_link)
    }

    /// Parses URDF text; `path` is used only in error messages.
    pub fn from_urdf_str(
        text: &str,
        path: &Path,
        base_link: &str,
        tcp_link: &str,
    ) -> Result<Self, ModelError> {
        let robot = urdf_rs::read_from_string(text).map_err(|e| ModelError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let err = |element: String, message: String| ModelError::Structure {
            path: path.to_owned(),
            element,
            message,
        };
        let links: HashMap<&str, &urdf_rs::Link> =
            robot.links.iter().map(|l| (l.name.as_str(), l)).collect();
        for j in &robot.joints {
            for l in [&j.parent.link, &j.child.link] {
                if !links.contains_key(l.as_str()) {
                    return Err(err(
                        format!("joint \"{}\"", j.name),
                        format!("refers to link \"{l}\", which is not defined"),
                    ));
                }
            }
        }
        let parent_joint: HashMap<&str, &urdf_rs::Joint> = robot
            .joints
            .iter()
            .map(|j| (j.child.link.as_str(), j))
            .collect();
        if !links.contains_key(tcp_link) {
            return Err(err(
                format!("link \"{tcp_link}\""),
                "the tool-centre-point link is not defined".into(),
            ));
        }
        // Walk from the TCP up to the base, collecting joints.
        let mut chain: Vec<&urdf_rs::Joint> = Vec::new();
        let mut cur = tcp_link;
        while cur != base_link {
            let Some(j) = parent_joint.get(cur) else {
                return Err(err(
                    format!("link \"{tcp_link}\""),
                    format!("is not below base link \"{base_link}\""),
                ));
            };
            chain.push(j);
            cur = j.parent.link.as_str();
            if chain.len() > robot.joints.len() {
                return Err(err("joints".into(), "the joint tree has a cycle".into()));
            }
        }
        chain.reverse();

        // Split the chain into moving joints, folding fixed joints into the next origin.
        let mut pending = Isometry3::identity();
        let mut moving: Vec<(&urdf_rs::Joint, Isometry3<f64>)> = Vec::new();
        for j in &chain {
            let o = pending * origin_to_isometry(&j.origin);
            match j.joint_type {
                urdf_rs::JointType::Fixed => pending = o,
                urdf_rs::JointType::Revolute => {
                    moving.push((j, o));
                    pending = Isometry3::identity();
                }
                _ => {
                    return Err(err(
                        format!("joint \"{}\"", j.name),
                        "arm joints must be revolute or fixed".into(),
                    ))
                }
            }
        }
        if !(MIN_ARM_DOF..=ARM_DOF).contains(&moving.len()) {
            return Err(err(
                format!("chain \"{base_link}\" -> \"{tcp_link}\""),
                format!(
                    "expected {MIN_ARM_DOF} or {ARM_DOF} revolute joints, found {}",
                    moving.len()
                ),
            ));
        }
        let dof = moving.len();
        let tcp_offset = pending;

        // Children of each link, to fold off-chain descendants into chain links' masses.
        let mut children: HashMap<&str, Vec<&urdf_rs::Joint>> = HashMap::new();
        for j in &robot.joints {
            children.entry(j.parent.link.as_str()).or_default().push(j);
        }
        let chain_links: Vec<&str> = moving.iter().map(|(j, _)| j.child.link.as_str()).collect();

        let mut joints = Vec::with_capacity(ARM_DOF);
        let mut names = Vec::with_capacity(ARM_DOF);
        let mut limits = Vec::with_capacity(ARM_DOF);
        for (i, (j, origin)) in moving.iter().enumerate() {
            let axis = Vector3::new(j.axis.xyz[0], j.axis.xyz[1], j.axis.xyz[2]);
            let norm = axis.norm();
            if !(norm > 1e-9) || !norm.is_finite() {
                return Err(err(
                    format!("joint \"{}\"", j.name),
                    "axis must be a non-zero finite vector".into(),
                ));
            }
            let l = &j.limit;
            if !(l.lower < l.upper) || !(l.velocity > 0.0) || !(l.effort > 0.0) {
                return Err(err(
                    format!("joint \"{}\" <limit>", j.name),
                    format!(
                        "needs lower < upper and positive velocity and effort, got lower {} upper {} velocity {} effort {}",
                        l.lower, l.upper, l.velocity, l.effort
                    ),
                ));
            }
            // Mass of this chain link plus everything below it that is not the next chain link.
            let next = chain_links.get(i + 1).copied();
            let (mass, moment) = accumulate_mass(
                j.child.link.as_str(),
                Isometry3::identity(),
                next,
                &links,
                &children,
            );
            let com = if mass > 0.0 {
                moment / mass
            } else {
                Vector3::zeros()
            };
            joints.push(ChainJoint {
                origin: *origin,
                axis: axis / norm,
                mass_kg: mass,
                com,
            });
            names.push(j.name.clone());
            limits.push(JointLimits {
                lower: l.lower,
                upper: l.upper,
                velocity: l.velocity,
                effort: l.effort,
            });
        }

        // A 6-DoF arm's seventh slot: an inert joint at the last link's frame.
        while joints.len() < ARM_DOF {
            joints.push(ChainJoint {
                origin: Isometry3::identity(),
                axis: Vector3::zeros(),
                mass_kg: 0.0,
                com: Vector3::zeros(),
            });
            names.push(String::new());
            limits.push(INERT_JOINT_LIMITS);
        }

        // Gripper: two prismatic joints whose parent is on the path from the last arm joint
        // to the TCP (or the last chain link itself).
        let mut tool_links: Vec<&str> = vec![chain_links[dof - 1]];
        let mut after_arm = false;
        for j in &chain {
            if after_arm {
                tool_links.push(j.child.link.as_str());
            }
            if j.name == moving[dof - 1].0.name {
                after_arm = true;
            }
        }
        let fingers: Vec<&urdf_rs::Joint> = robot
            .joints
            .iter()
            .filter(|j| {
                matches!(j.joint_type, urdf_rs::JointType::Prismatic)
                    && tool_links.contains(&j.parent.link.as_str())
            })
            .collect();
        // Pose of each tool link in the last arm link's frame, for the fingertips.
        let mut tool_pose: HashMap<&str, Isometry3<f64>> = HashMap::new();
        tool_pose.insert(chain_links[dof - 1], Isometry3::identity());
        let mut after = false;
        for j in &chain {
            if after {
                let parent = tool_pose
                    .get(j.parent.link.as_str())
                    .copied()
                    .unwrap_or_else(Isometry3::identity);
                tool_pose.insert(
                    j.child.link.as_str(),
                    parent * origin_to_isometry(&j.origin),
                );
            }
            if j.name == moving[dof - 1].0.name {
                after = true;
            }
        }
        let tcp_inv = tcp_offset.inverse();
        let mut fingertips_in_tcp_m = [Vector3::zeros(); 2];
        if fingers.len() == 2 {
            for (tip, f) in fingertips_in_tcp_m.iter_mut().zip(&fingers) {
                let parent = tool_pose
                    .get(f.parent.link.as_str())
                    .copied()
                    .unwrap_or_else(Isometry3::identity);
                let origin = tcp_inv * parent * origin_to_isometry(&f.origin);
                let axis = Vector3::new(f.axis.xyz[0], f.axis.xyz[1], f.axis.xyz[2]);
                let norm = axis.norm();
                if !(norm > 1e-9 && norm.is_finite()) {
                    return Err(err(
                        format!("joint \"{}\"", f.name),
                        "axis must be a non-zero finite vector".into(),
                    ));
                }
                let axis = origin.rotation * (axis / norm);
                let mut base = origin.translation.vector;
                base.z = 0.0;
                *tip = base + axis * f.limit.upper;
            }
        }
        let gripper = match fingers.as_slice() {
            [] => None,
            [a, b] => {
                let l = &a.limit;
                if !(l.lower < l.upper) || !(l.effort > 0.0) || !(l.velocity > 0.0) {
                    return Err(err(
                        format!("joint \"{}\" <limit>", a.name),
                        "finger joints need lower < upper and positive velocity and effort".into(),
                    ));
                }
                Some(GripperModel {
                    finger_joints: [a.name.clone(), b.name.clone()],
                    finger_limits: JointLimits {
                        lower: l.lower,
                        upper: l.upper,
                        velocity: l.velocity,
                        effort: l.effort,
                    },
                })
            }
            more => {
                return Err(err(
                    "gripper".into(),
                    format!(
                        "expected 0 or 2 prismatic finger joints, found {}",
                        more.len()
                    ),
                ))
            }
        };

        let to_array = |v: Vec<String>| -> [String; ARM_DOF] {
            v.try_into()
                .unwrap_or_else(|_| unreachable!("length checked above"))
        };
        Ok(Self {
            joint_names: to_array(names),
            limits: limits
                .try_into()
                .unwrap_or_else(|_| unreachable!("length checked above")),
            dof,
            base_link: base_link.to_owned(),
            tcp_link: tcp_link.to_owned(),
            gripper,
            fingertips_in_tcp_m,
            joints: joints
                .try_into()
                .unwrap_or_else(|_| unreachable!("length checked above")),
            tcp_offset,
        })
    }

    /// Forward kinematics: fills `out` with link and TCP poses in the base frame.
    pub fn forward(&self, q: &[f64; ARM_DOF], out: &mut Frames) {
        let mut t = Isometry3::identity();
        for (i, j) in self.joints.iter().enumerate() {
            let rot = UnitQuaternion::from_scaled_axis(j.axis * q[i]);
            t = t * j.origin * Isometry3::from_parts(Translation3::identity(), rot);
            out.links[i] = t;
        }
        out.tcp = t * self.tcp_offset;
    }

    /// The points the safety envelope checks, in the base frame, from frames computed by
    /// [`Self::forward`]: link origins 1 to 7 (index 0 to 6), the TCP (7) and the fingertips at
    /// the widest opening (8, 9).
    pub fn envelope_points(&self, frames: &Frames, out: &mut [Vector3<f64>; ENVELOPE_POINTS]) {
        for (o, l) in out.iter_mut().zip(&frames.links) {
            *o = l.translation.vector;
        }
        out[ARM_DOF] = frames.tcp.translation.vector;
        for (k, tip) in self.fingertips_in_tcp_m.iter().enumerate() {
            out[ARM_DOF + 1 + k] = (frames.tcp * nalgebra::Point3::from(*tip)).coords;
        }
    }

    /// Pose of the TCP in the base frame.
    pub fn tcp_pose(&self, q: &[f64; ARM_DOF]) -> Isometry3<f64> {
        let mut f = Frames::default();
        self.forward(q, &mut f);
        f.tcp
    }

    /// Geometric Jacobian of the TCP (base frame) from frames computed by [`Self::forward`].
    pub fn jacobian(&self, frames: &Frames, out: &mut Jacobian) {
        let p_tcp = frames.tcp.translation.vector;
        for (i, j) in self.joints.iter().enumerate() {
            let z = frames.links[i].rotation * j.axis;
            let p = frames.links[i].translation.vector;
            let v = z.cross(&(p_tcp - p));
            for r in 0..3 {
                out[(r, i)] = v[r];
                out[(r + 3, i)] = z[r];
            }
        }
    }

    /// Joint torques that hold the arm still against `gravity_m_s2` (base frame), N m.
    pub fn gravity_compensation(
        &self,
        frames: &Frames,
        gravity_m_s2: Vector3<f64>,
        out: &mut [f64; ARM_DOF],
    ) {
        // Torque gravity exerts about joint i is the sum over links k >= i of
        // (z_i x (c_k - p_i)) . (m_k g); compensation is its negative.
        for (i, ji) in self.joints.iter().enumerate() {
            let z = frames.links[i].rotation * ji.axis;
            let p = frames.links[i].translation.vector;
            let mut tau = 0.0;
            for (k, jk) in self.joints.iter().enumerate().skip(i) {
                let c = frames.links[k] * nalgebra::Point3::from(jk.com);
                tau += z.cross(&(c.coords - p)).dot(&(gravity_m_s2 * jk.mass_kg));
            }
            out[i] = -tau;
        }
    }

    /// Clamps `q` into the joint limits shrunk by `margin_rad` on each side.
    pub fn clamp_to_limits(&self, q: &mut [f64; ARM_DOF], margin_rad: f64) {
        for (v, l) in q.iter_mut().zip(&self.limits) {
            let lo = l.lower + margin_rad;
            let hi = (l.upper - margin_rad).max(lo);
            *v = v.clamp(lo, hi);
        }
    }

    /// An upper bound on the distance between any joint axis and any envelope point (see
    /// [`Self::envelope_points`]), metres: the chain's link offsets, the tool offset and the
    /// farthest fingertip, summed. A joint turning by `d` radians moves no envelope point
    /// further than this times `d`.
    pub fn reach_bound_m(&self) -> f64 {
        let links: f64 = self
            .joints
            .iter()
            .map(|j| j.origin.translation.vector.norm())
            .sum();
        let tip = self
            .fingertips_in_tcp_m
            .iter()
            .map(|t| t.norm())
            .fold(0.0, f64::max);
        links + self.tcp_offset.translation.vector.norm() + tip
    }

    /// Total mass carried by the chain, kilograms.
    pub fn moving_mass_kg(&self) -> f64 {
        self.joints.iter().map(|j| j.mass_kg).sum()
    }
}

/// Mass and first moment of `link` and its descendants (stopping at `stop`), in `link`'s frame.
fn accumulate_mass(
    link: &str,
    pose: Isometry3<f64>,
    stop: Option<&str>,
    links: &HashMap<&str, &urdf_rs::Link>,
    children: &HashMap<&str, Vec<&urdf_rs::Joint>>,
) -> (f64, Vector3<f64>) {
    let mut mass = 0.0;
    let mut moment = Vector3::zeros();
    if let Some(l) = links.get(link) {
        let m = l.inertial.mass.value;
        // A point, not a vector: `Isometry * Vector3` would drop the translation.
        let c = pose
            .transform_point(&nalgebra::Point3::from(
                origin_to_isometry(&l.inertial.origin).translation.vector,
            ))
            .coords;
        mass += m;
        moment += c * m;
    }
    for j in children.get(link).map(|v| v.as_slice()).unwrap_or(&[]) {
        if Some(j.child.link.as_str()) == stop {
            continue;
        }
        let (m, mo) = accumulate_mass(
            j.child.link.as_str(),
            pose * origin_to_isometry(&j.origin),
            stop,
            links,
            children,
        );
        mass += m;
        moment += mo;
    }
    (mass, moment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix6xX;

    fn jacobian_dyn(m: &ArmModel, q: &[f64; ARM_DOF]) -> Matrix6xX<f64> {
        let mut f = Frames::default();
        m.forward(q, &mut f);
        let mut j = Jacobian::zeros();
        m.jacobian(&f, &mut j);
        Matrix6xX::from_column_slice(j.as_slice())
    }

    fn model() -> ArmModel {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
        ArmModel::from_urdf_file(&path, "link0", "tcp").expect("the shipped URDF loads")
    }

    #[test]
    fn a_six_dof_arm_fills_six_slots_and_its_seventh_moves_nothing() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/ur5e.urdf");
        let m = ArmModel::from_urdf_file(&path, "base_link", "tool0").unwrap();
        assert_eq!(m.dof, 6);
        assert_eq!(m.joint_names[0], "shoulder_pan_joint");
        assert_eq!(m.joint_names[5], "wrist_3_joint");
        assert_eq!(m.joint_names[6], "");
        assert_eq!(m.limits[6], INERT_JOINT_LIMITS);
        assert!(m.gripper.is_none());
        // UR's DH parameters put the flange here at all-zero joints ...
        let t = m.tcp_pose(&[0.0; ARM_DOF]).translation.vector;
        let want = Vector3::new(-0.8172, -0.2329, 0.0628);
        assert!((t - want).norm() < 1e-4, "{t}");
        // ... and here, pointing down, in the usual working posture.
        let pi = std::f64::consts::PI;
        let q = [pi, -pi / 2.0, pi / 2.0, -pi / 2.0, -pi / 2.0, 0.0, 0.0];
        let f = m.tcp_pose(&q);
        let want = Vector3::new(0.4922, 0.1329, 0.4878);
        assert!((f.translation.vector - want).norm() < 1e-3, "{f}");
        assert!((f.rotation * Vector3::z() - Vector3::new(0.0, 0.0, -1.0)).norm() < 1e-6);
        // The seventh slot moves no frame and has a zero Jacobian column; the six real
        // columns have full rank there.
        let mut q7 = q;
        q7[6] = 0.9;
        assert!((m.tcp_pose(&q7).to_homogeneous() - f.to_homogeneous()).norm() < 1e-12);
        let j = jacobian_dyn(&m, &q);
        assert!(j.column(6).norm() == 0.0);
        let six = nalgebra::Matrix6::from_fn(|r, c| j[(r, c)]);
        assert!(six.determinant().abs() > 1e-3, "{six}");
        // Five or eight revolute joints are refused, naming the chain.
        let e = ArmModel::from_urdf_file(&path, "base_link", "wrist_2_link")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected 6 or 7 revolute joints, found 5"),
            "{e}"
        );
    }

    #[test]
    fn shipped_arm_has_seven_joints_with_panda_class_limits() {
        let m = model();
        assert_eq!(m.joint_names[0], "joint1");
        assert_eq!(m.joint_names[6], "joint7");
        assert!((m.limits[3].lower - (-3.0718)).abs() < 1e-9);
        assert!((m.limits[3].upper - (-0.0698)).abs() < 1e-9);
        assert_eq!(m.limits[0].effort, 87.0);
        assert_eq!(m.limits[6].effort, 12.0);
        let g = m.gripper.as_ref().expect("gripper");
        assert!((g.max_width_m() - 0.08).abs() < 1e-12);
        // Links 1..7 plus flange, hand and fingers (the base does not move).
        assert!(
            (m.moving_mass_kg() - 16.8221).abs() < 1e-6,
            "{}",
            m.moving_mass_kg()
        );
    }

    #[test]
    fn zero_pose_tcp_matches_the_published_geometry() {
        // At q = 0 the arm points straight up with the wrist offset: x = a4 - a5 + a7 = 0.088,
        // z = d1 + d3 + d5 - d7 - hand = 0.333 + 0.316 + 0.384 - 0.107 - 0.1034.
        let m = model();
        let t = m.tcp_pose(&[0.0; ARM_DOF]);
        assert!((t.translation.x - 0.088).abs() < 1e-9, "{t}");
        assert!(t.translation.y.abs() < 1e-9, "{t}");
        assert!((t.translation.z - (0.333 + 0.316 + 0.384 - 0.107 - 0.1034)).abs() < 1e-9);
    }

    /// Regression: the hand's mass sat at the flange's origin because its offset was applied
    /// as a vector (rotation only) instead of a point, so gravity compensation was 1% off.
    #[test]
    fn fixed_joint_offsets_move_the_fused_centre_of_mass() {
        let m = model();
        let last = &m.joints[ARM_DOF - 1];
        // link7 0.7355 kg at z 0.0616; hand 0.73 kg at 0.107 + 0.03; fingers 2 x 0.015 kg at
        // 0.107 + 0.0584 + 0.03 (the finger frames point along link7's z).
        let z = (0.7355 * 0.0616 + 0.73 * 0.137 + 0.03 * 0.1954) / 1.4955;
        assert!((last.mass_kg - 1.4955).abs() < 1e-9);
        assert!(
            (last.com.z - z).abs() < 1e-9,
            "fused COM z {} expected {z}",
            last.com.z
        );
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        let m = model();
        let q = [0.1, -0.4, 0.2, -2.0, 0.1, 1.7, 0.6];
        let j = jacobian_dyn(&m, &q);
        let h = 1e-7;
        let t0 = m.tcp_pose(&q);
        for c in 0..ARM_DOF {
            let mut qp = q;
            qp[c] += h;
            let t1 = m.tcp_pose(&qp);
            let dp = (t1.translation.vector - t0.translation.vector) / h;
            let dr = (t1.rotation * t0.rotation.inverse()).scaled_axis() / h;
            for r in 0..3 {
                assert!((j[(r, c)] - dp[r]).abs() < 1e-5, "lin {r},{c}");
                assert!((j[(r + 3, c)] - dr[r]).abs() < 1e-5, "ang {r},{c}");
            }
        }
    }

    #[test]
    fn gravity_torque_is_the_gradient_of_potential_energy() {
        // tau_comp = dV/dq where V = sum m g z_com; check by finite differences.
        let m = model();
        let g = Vector3::new(0.0, 0.0, -9.81);
        let q = [0.3, -0.5, 0.1, -2.2, 0.2, 1.5, 0.4];
        let potential = |q: &[f64; ARM_DOF]| {
            let mut f = Frames::default();
            m.forward(q, &mut f);
            m.joints
                .iter()
                .enumerate()
                .map(|(k, jk)| {
                    -(f.links[k] * nalgebra::Point3::from(jk.com)).coords.dot(&g) * jk.mass_kg
                })
                .sum::<f64>()
        };
        let mut f = Frames::default();
        m.forward(&q, &mut f);
        let mut tau = [0.0; ARM_DOF];
        m.gravity_compensation(&f, g, &mut tau);
        for c in 0..ARM_DOF {
            let mut qp = q;
            qp[c] += 1e-6;
            let mut qm = q;
            qm[c] -= 1e-6;
            let d = (potential(&qp) - potential(&qm)) / 2e-6;
            assert!((tau[c] - d).abs() < 1e-4, "joint {c}: {} vs {}", tau[c], d);
        }
        assert!(tau[1].abs() > 1.0, "the shoulder carries load at this pose");
    }

    #[test]
    fn bad_urdf_names_the_file_and_joint() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf"),
        )
        .unwrap();
        let broken = text.replacen(
            r#"lower="-3.0718" upper="-0.0698""#,
            r#"lower="0.5" upper="-0.0698""#,
            1,
        );
        let e = ArmModel::from_urdf_str(&broken, Path::new("arm.urdf"), "link0", "tcp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("arm.urdf") && e.contains("joint4"), "{e}");
        let e = ArmModel::from_urdf_str("<robot", Path::new("x.urdf"), "link0", "tcp")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.urdf: invalid URDF"), "{e}");
        let e = ArmModel::from_urdf_str(&text, Path::new("a.urdf"), "link0", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }
}
