//! Joint states in: a `sensor_msgs/JointState` becomes a [`RobotState`] or is refused with a
//! reason. Joints are matched by name in any order (extra joints ignored); vector lengths must
//! match the names (velocity and effort may be empty); a stamp before the last accepted one is
//! refused; a missing velocity is differentiated from positions. A non-finite value is not
//! refused but flagged, so the loop can hold at once. Pure, so property tests cover it without
//! DDS.
//!
//! Commands out to a velocity controller: [`velocity_command`], the joint velocities that track
//! the runtime's position setpoints, always finite and within the limits.

use crate::msg::{JointState, Time};
use reflex_core::{ArmModel, Pose, RobotState, ARM_DOF};

/// Why a joint state was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `position`, `velocity` or `effort` has a length other than `name`'s (velocity and
    /// effort may be empty).
    BadLength,
    /// A configured joint is not in `name`.
    MissingJoint(String),
    /// Stamped before the last accepted state.
    OutOfOrder,
}

/// A decoded joint state.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    /// The state (tool pose from forward kinematics when finite).
    pub state: RobotState,
    /// Some value is NaN or infinite: the loop must not use the state.
    pub non_finite: bool,
}

/// Decodes joint states for one arm.
pub struct JointStateDecoder {
    joints: Vec<String>,
    /// Arm joints (the model's `dof`; a 6-DoF arm's seventh slot stays 0).
    n_arm: usize,
    model: ArmModel,
    names_seen: Vec<String>,
    index: Vec<usize>,
    last_stamp: Time,
    prev: Option<(u64, [f64; ARM_DOF])>,
}

impl JointStateDecoder {
    /// A decoder for the arm joints `arm` (the command's order; one per real joint of
    /// `model`, at most [`ARM_DOF`]) and the gripper's finger joints `gripper` (the width is
    /// the sum of their positions).
    pub fn new(arm: &[String], gripper: &[String], model: ArmModel) -> Self {
        assert!(arm.len() <= ARM_DOF, "at most {ARM_DOF} arm joints");
        Self {
            joints: arm.iter().chain(gripper).cloned().collect(),
            n_arm: arm.len(),
            model,
            names_seen: Vec::new(),
            index: Vec::new(),
            last_stamp: Time::default(),
            prev: None,
        }
    }

    /// Decodes `msg`, received at `now_ns` (the bridge's clock).
    pub fn decode(&mut self, msg: &JointState, now_ns: u64) -> Result<Decoded, Refused> {
        let n = msg.name.len();
        if msg.position.len() != n
            || !(msg.velocity.is_empty() || msg.velocity.len() == n)
            || !(msg.effort.is_empty() || msg.effort.len() == n)
        {
            return Err(Refused::BadLength);
        }
        if msg.name != self.names_seen {
            let mut index = Vec::with_capacity(self.joints.len());
            for j in &self.joints {
                match msg.name.iter().position(|m| m == j) {
                    Some(i) => index.push(i),
                    None => return Err(Refused::MissingJoint(j.clone())),
                }
            }
            self.names_seen = msg.name.clone();
            self.index = index;
        }
        let stamp = msg.header.stamp;
        if stamp != Time::default() && stamp < self.last_stamp {
            return Err(Refused::OutOfOrder);
        }
        self.last_stamp = stamp;
        let mut state = RobotState {
            stamp_ns: now_ns,
            ..Default::default()
        };
        for k in 0..self.n_arm {
            let i = self.index[k];
            state.joint_pos_rad[k] = msg.position[i];
            state.joint_vel_rad_s[k] = msg.velocity.get(i).copied().unwrap_or(0.0);
            state.joint_torque_nm[k] = msg.effort.get(i).copied().unwrap_or(0.0);
        }
        if msg.velocity.is_empty() {
            // No measured velocity: differentiate positions over the receive times.
            if let Some((t, q)) = self.prev.filter(|(t, _)| now_ns > *t) {
                let dt = (now_ns - t) as f64 * 1e-9;
                for ((v, p), q) in state
                    .joint_vel_rad_s
                    .iter_mut()
                    .zip(&state.joint_pos_rad)
                    .zip(&q)
                {
                    *v = (p - q) / dt;
                }
            }
        }
        state.gripper_width_m = self.index[self.n_arm..]
            .iter()
            .map(|&i| msg.position[i])
            .sum();
        let non_finite = !state.is_finite();
        if non_finite {
            // A differentiated velocity must not carry the bad value into the next state.
            self.prev = None;
        } else {
            self.prev = Some((now_ns, state.joint_pos_rad));
            let tcp = self.model.tcp_pose(&state.joint_pos_rad);
            state.tcp_pose = Pose::from_isometry(&tcp);
        }
        Ok(Decoded { state, non_finite })
    }
}

/// The joint velocities that track `target` on a velocity controller: its rate of change
/// since `previous` over `dt_s` (when `dt_s` is given) plus `gain` times the error from
/// `measured` (when known), each clamped to `limits`; a non-finite component is zero. Always
/// finite and within `limits` (which must be non-negative).
pub fn velocity_command(
    target: &[f64; ARM_DOF],
    previous: &[f64; ARM_DOF],
    dt_s: Option<f64>,
    measured: Option<&[f64; ARM_DOF]>,
    gain: f64,
    limits: &[f64; ARM_DOF],
) -> [f64; ARM_DOF] {
    std::array::from_fn(|j| {
        let mut v = match dt_s {
            Some(dt) if dt > 0.0 => (target[j] - previous[j]) / dt,
            _ => 0.0,
        };
        if let Some(q) = measured {
            v += gain * (target[j] - q[j]);
        }
        let limit = if limits[j].is_finite() {
            limits[j].max(0.0)
        } else {
            0.0
        };
        if v.is_finite() {
            v.clamp(-limit, limit)
        } else {
            0.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Header;
    use proptest::prelude::*;

    fn model() -> ArmModel {
        let urdf =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
        ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap()
    }

    fn decoder() -> JointStateDecoder {
        let m = model();
        let arm = m.joint_names.clone();
        let fingers = m.gripper.as_ref().unwrap().finger_joints.to_vec();
        JointStateDecoder::new(&arm, &fingers, m)
    }

    /// Every joint the decoder knows, plus one it does not.
    fn all_names() -> Vec<String> {
        let mut v: Vec<String> = (1..=7).map(|i| format!("joint{i}")).collect();
        v.extend([
            "left_finger_joint".into(),
            "right_finger_joint".into(),
            "conveyor".into(),
        ]);
        v
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => -3.0..3.0f64,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
        ]
    }

    fn message() -> impl Strategy<Value = JointState> {
        (
            Just(all_names()).prop_shuffle(),
            0usize..=10,
            prop::collection::vec(value(), 0..12),
            prop::collection::vec(value(), 0..12),
            prop::collection::vec(value(), 0..12),
            0i32..5,
            any::<bool>(),
        )
            .prop_map(|(names, drop, pos, vel, eff, sec, rename)| {
                let mut name: Vec<String> = names.into_iter().skip(drop / 5).collect();
                if rename && !name.is_empty() {
                    name[0] = "jnt1".into();
                }
                JointState {
                    header: Header {
                        stamp: Time { sec, nanosec: 0 },
                        frame_id: String::new(),
                    },
                    name,
                    position: pos,
                    velocity: vel,
                    effort: eff,
                }
            })
    }

    fn well_formed() -> impl Strategy<Value = JointState> {
        (
            Just(all_names()).prop_shuffle(),
            prop::collection::vec(value(), 10),
            any::<bool>(),
        )
            .prop_map(|(name, position, with_velocity)| JointState {
                header: Header::default(),
                velocity: if with_velocity {
                    position.iter().map(|p| p * 0.5).collect()
                } else {
                    vec![]
                },
                effort: vec![],
                name,
                position,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the setpoints, measurements, period and gain (NaN and infinities
        /// included), a velocity command is finite and within every joint's limit.
        #[test]
        fn velocity_commands_stay_finite_and_within_the_limits(
            target in prop::array::uniform7(prop_oneof![
                -10.0..10.0f64, Just(f64::NAN), Just(f64::INFINITY), Just(-1e300)]),
            previous in prop::array::uniform7(-10.0..10.0f64),
            measured in prop::option::of(prop::array::uniform7(prop_oneof![
                -10.0..10.0f64, Just(f64::NAN)])),
            dt in prop::option::of(prop_oneof![0.0..0.1f64, Just(1e-12), Just(f64::NAN)]),
            gain in prop_oneof![0.0..100.0f64, Just(f64::INFINITY)],
            limits in prop::array::uniform7(0.0..3.0f64),
        ) {
            let v = velocity_command(&target, &previous, dt, measured.as_ref(), gain, &limits);
            for j in 0..ARM_DOF {
                prop_assert!(v[j].is_finite());
                prop_assert!(v[j].abs() <= limits[j], "joint {}: {} > {}", j, v[j], limits[j]);
            }
        }

        /// Whatever arrives, an accepted state is either finite or flagged, carries every
        /// configured joint's own value (matched by name), and stamps never go backwards.
        #[test]
        fn no_message_yields_an_unflagged_non_finite_or_misread_state(
            msgs in prop::collection::vec(message(), 1..20)
        ) {
            let mut d = decoder();
            let mut last = Time::default();
            for (k, msg) in msgs.iter().enumerate() {
                let now = 1_000_000 * (k as u64 + 1);
                match d.decode(msg, now) {
                    Ok(out) => {
                        prop_assert_eq!(out.non_finite, !out.state.is_finite());
                        prop_assert_eq!(msg.position.len(), msg.name.len());
                        for j in 0..ARM_DOF {
                            let i = msg.name.iter().position(|n| *n == format!("joint{}", j + 1)).unwrap();
                            let (got, want) = (out.state.joint_pos_rad[j], msg.position[i]);
                            prop_assert!(got == want || (got.is_nan() && want.is_nan()));
                        }
                        if msg.header.stamp != Time::default() {
                            prop_assert!(msg.header.stamp >= last);
                            last = msg.header.stamp;
                        }
                    }
                    Err(Refused::BadLength) => prop_assert!(
                        msg.position.len() != msg.name.len()
                            || !(msg.velocity.is_empty() || msg.velocity.len() == msg.name.len())
                            || !(msg.effort.is_empty() || msg.effort.len() == msg.name.len())
                    ),
                    Err(Refused::MissingJoint(j)) => prop_assert!(!msg.name.contains(&j)),
                    Err(Refused::OutOfOrder) => prop_assert!(msg.header.stamp < last),
                }
            }
        }

        /// A well-formed message in any joint order decodes to the same state.
        #[test]
        fn joint_order_does_not_matter(msg in well_formed()) {
            let mut sorted = msg.clone();
            let mut pairs: Vec<(String, f64, Option<f64>)> = msg.name.iter().cloned()
                .zip(msg.position.iter().copied())
                .zip((0..msg.name.len()).map(|i| msg.velocity.get(i).copied()))
                .map(|((n, p), v)| (n, p, v)).collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            sorted.name = pairs.iter().map(|p| p.0.clone()).collect();
            sorted.position = pairs.iter().map(|p| p.1).collect();
            sorted.velocity = pairs.iter().filter_map(|p| p.2).collect();
            let a = decoder().decode(&msg, 5).unwrap();
            let b = decoder().decode(&sorted, 5).unwrap();
            prop_assert_eq!(a.non_finite, b.non_finite);
            for j in 0..ARM_DOF {
                let (x, y) = (a.state.joint_pos_rad[j], b.state.joint_pos_rad[j]);
                prop_assert!(x == y || (x.is_nan() && y.is_nan()));
            }
        }
    }

    #[test]
    fn a_missing_velocity_is_differentiated_and_a_bad_state_does_not_poison_the_next() {
        let mut d = decoder();
        let names = all_names();
        let mut msg = JointState {
            name: names.clone(),
            position: vec![0.0; names.len()],
            ..Default::default()
        };
        assert_eq!(
            d.decode(&msg, 1_000_000).unwrap().state.joint_vel_rad_s[0],
            0.0
        );
        msg.position[0] = 0.01;
        let v = d.decode(&msg, 2_000_000).unwrap().state.joint_vel_rad_s[0];
        assert!((v - 10.0).abs() < 1e-9, "{v}");
        msg.position[0] = f64::NAN;
        assert!(d.decode(&msg, 3_000_000).unwrap().non_finite);
        msg.position[0] = 0.02;
        let next = d.decode(&msg, 4_000_000).unwrap();
        assert!(
            !next.non_finite,
            "the NaN before must not make this one non-finite"
        );
        msg.name[3] = "elbow".into();
        assert_eq!(
            d.decode(&msg, 5_000_000).unwrap_err(),
            Refused::MissingJoint("joint4".into())
        );
    }
}
