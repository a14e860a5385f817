//! A stand-in for the motors and the arm, for the core's own checks (on the host and in
//! QEMU): each joint an inertia with viscous friction, driven by the commanded torque. The
//! real plant is the board's hardware, or the rapier arm behind `reflex firmware-sim`.

use crate::controller::{Measured, MotorCommand, MotorPort};
use reflex_wire::JOINTS;

/// Independent joints: inertia, friction and a motor torque constant.
#[derive(Clone, Copy, Debug)]
pub struct Plant {
    /// Positions, radians.
    pub pos_rad: [f32; JOINTS],
    /// Velocities, radians per second.
    pub vel_rad_s: [f32; JOINTS],
    /// Currents of the last command, amperes.
    pub current_a: [f32; JOINTS],
    /// Gripper width, metres (follows its setpoint).
    pub gripper_m: f32,
    /// Inertia per joint, kilogram square metres.
    pub inertia_kg_m2: f32,
    /// Viscous friction, newton metre seconds per radian.
    pub friction_nm_s: f32,
    /// Torque per ampere, newton metres per ampere.
    pub torque_per_amp_nm_a: f32,
}

impl Plant {
    /// At rest at `pos_rad`.
    pub fn at(pos_rad: [f32; JOINTS], torque_per_amp_nm_a: f32) -> Self {
        Self {
            pos_rad,
            vel_rad_s: [0.0; JOINTS],
            current_a: [0.0; JOINTS],
            gripper_m: 0.0,
            inertia_kg_m2: 0.05,
            friction_nm_s: 0.1,
            torque_per_amp_nm_a,
        }
    }

    /// What the sensors read.
    pub fn measure(&self) -> Measured {
        Measured {
            pos_rad: self.pos_rad,
            vel_rad_s: self.vel_rad_s,
            current_a: self.current_a,
            gripper_m: self.gripper_m,
        }
    }

    /// Advances `dt_s` under `cmd` (semi-implicit Euler in ten substeps).
    pub fn step(&mut self, cmd: &MotorCommand, dt_s: f32) {
        let h = dt_s / 10.0;
        for j in 0..JOINTS {
            let torque = if cmd.enabled { cmd.torque_nm[j] } else { 0.0 };
            self.current_a[j] = torque / self.torque_per_amp_nm_a;
            for _ in 0..10 {
                let acc = (torque - self.friction_nm_s * self.vel_rad_s[j]) / self.inertia_kg_m2;
                self.vel_rad_s[j] += acc * h;
                self.pos_rad[j] += self.vel_rad_s[j] * h;
            }
        }
        self.gripper_m = cmd.gripper_m;
    }
}

impl MotorPort for Plant {
    fn measure(&mut self) -> Measured {
        Plant::measure(self)
    }

    fn drive(&mut self, cmd: &MotorCommand, dt_s: f32) {
        self.step(cmd, dt_s);
    }
}
