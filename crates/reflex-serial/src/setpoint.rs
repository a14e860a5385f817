//! Joint commands into board setpoints: the position, the command's rate of change as velocity
//! feed-forward and gravity-compensation torques at the commanded configuration. Shared by
//! [`crate::SerialRobot`] and anything else that drives the firmware's core (the in-process
//! board simulation), so both send the board exactly the same setpoints.

use reflex_core::{ArmModel, Frames, JointCommand, ARM_DOF};
use reflex_wire::Setpoint;

/// Turns each command into a setpoint; remembers the last one for the velocity feed-forward.
#[derive(Clone, Debug)]
pub struct SetpointShaper {
    model: ArmModel,
    frames: Frames,
    gravity: [f64; ARM_DOF],
    last: JointCommand,
    /// When the last command went out, nanoseconds (0: none since the last restart).
    last_ns: u64,
    velocity_feedforward: bool,
    gravity_feedforward: bool,
}

impl SetpointShaper {
    /// A shaper for `model`'s arm, with the feed-forward terms asked for.
    pub fn new(model: ArmModel, velocity_feedforward: bool, gravity_feedforward: bool) -> Self {
        Self {
            model,
            frames: Frames::default(),
            gravity: [0.0; ARM_DOF],
            last: JointCommand::default(),
            last_ns: 0,
            velocity_feedforward,
            gravity_feedforward,
        }
    }

    /// Forgets the last command: the next setpoint carries no velocity feed-forward (after a
    /// pause, a reset or a new request for position control).
    pub fn restart(&mut self) {
        self.last_ns = 0;
    }

    /// The setpoint for `command`, sent at `now_ns`. The velocity feed-forward is the
    /// command's change since the last one over the time between them, when that time is
    /// between 0.1 ms and 50 ms (otherwise none: a gap is not a speed).
    pub fn setpoint(&mut self, command: &JointCommand, now_ns: u64) -> Setpoint {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 * 1e-9;
        let rate = self.velocity_feedforward && self.last_ns > 0 && dt > 1e-4 && dt < 0.05;
        if self.gravity_feedforward {
            self.model.forward(&command.joint_pos_rad, &mut self.frames);
            self.model.gravity_compensation(
                &self.frames,
                nalgebra::Vector3::new(0.0, 0.0, -9.81),
                &mut self.gravity,
            );
        }
        let mut s = Setpoint {
            gripper_m: command.gripper_width_m as f32,
            ..Default::default()
        };
        for j in 0..self.model.dof {
            s.pos_rad[j] = command.joint_pos_rad[j] as f32;
            if rate {
                s.vel_rad_s[j] =
                    ((command.joint_pos_rad[j] - self.last.joint_pos_rad[j]) / dt) as f32;
            }
            if self.gravity_feedforward {
                s.torque_nm[j] = self.gravity[j] as f32;
            }
        }
        self.last = *command;
        self.last_ns = now_ns;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ArmModel {
        let urdf = concat!(env!("CARGO_MANIFEST_DIR"), "/../../urdf/reflex_arm.urdf");
        ArmModel::from_urdf_file(std::path::Path::new(urdf), "link0", "tcp")
            .expect("the repo's arm")
    }

    #[test]
    fn velocity_feedforward_is_the_commands_rate_and_a_gap_sends_none() {
        let mut s = SetpointShaper::new(model(), true, false);
        let mut c = JointCommand::default();
        assert_eq!(
            s.setpoint(&c, 1_000_000).vel_rad_s,
            [0.0; ARM_DOF].map(|v| v as f32)
        );
        c.joint_pos_rad[2] = 0.002;
        let sp = s.setpoint(&c, 3_000_000);
        assert!((sp.vel_rad_s[2] - 1.0).abs() < 1e-4, "{:?}", sp.vel_rad_s);
        assert_eq!(sp.torque_nm, [0.0; ARM_DOF].map(|v| v as f32));
        c.joint_pos_rad[2] = 0.5;
        // 100 ms later: a gap, not a speed.
        assert_eq!(s.setpoint(&c, 103_000_000).vel_rad_s[2], 0.0);
        s.restart();
        c.joint_pos_rad[2] = 0.6;
        assert_eq!(s.setpoint(&c, 104_000_000).vel_rad_s[2], 0.0);
    }

    #[test]
    fn gravity_feedforward_holds_the_arm_up() {
        let m = model();
        let mut q = JointCommand::default();
        q.joint_pos_rad[1] = 0.8;
        let with = SetpointShaper::new(m.clone(), false, true).setpoint(&q, 1);
        let without = SetpointShaper::new(m, false, false).setpoint(&q, 1);
        assert!(with.torque_nm[1].abs() > 1.0, "{:?}", with.torque_nm);
        assert_eq!(without.torque_nm, [0.0; ARM_DOF].map(|v| v as f32));
        assert_eq!(with.pos_rad[1], 0.8);
    }
}
