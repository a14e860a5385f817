//! A robot stand-in for benchmarks and tests: the arm's kinematics with second-order joint
//! dynamics (each joint a damped spring toward its command, as a stiff impedance controller
//! behaves), so the measured state lags the command the way a real arm's does. No scene, no
//! rewards: `judge` keeps the default (pending), so episodes run until the caller ends them.

use reflex_core::{
    ArmModel, JointCommand, Observation, Pose, Robot, RobotError, RobotState, ARM_DOF,
};

/// A kinematic arm whose joints follow their commands through a second-order lag.
pub struct StandInArm {
    model: ArmModel,
    /// Joint positions, radians.
    pub q: [f64; ARM_DOF],
    /// Joint velocities, rad/s.
    pub qd: [f64; ARM_DOF],
    /// Gripper width, metres.
    pub width_m: f64,
    /// Natural frequency of the joints' response, rad/s.
    pub omega_rad_s: f64,
    /// Damping ratio of the joints' response.
    pub zeta: f64,
    dt_s: f64,
    t_ns: u64,
    /// Commands written so far.
    pub commands: u64,
    /// The last command written.
    pub last_command: JointCommand,
    /// Objects, keypoints and goals reported as a fixed scene (so observations have the width
    /// of a task's).
    pub scene: (usize, usize, usize),
}

impl StandInArm {
    /// An arm at rest at `q` with a gripper width, advanced by `dt_s` per command, responding
    /// at 30 rad/s with damping 0.9 (a stiff impedance controller).
    pub fn new(model: ArmModel, q: [f64; ARM_DOF], width_m: f64, dt_s: f64) -> Self {
        Self {
            model,
            q,
            qd: [0.0; ARM_DOF],
            width_m,
            omega_rad_s: 30.0,
            zeta: 0.9,
            dt_s,
            t_ns: 0,
            commands: 0,
            last_command: JointCommand {
                joint_pos_rad: q,
                gripper_width_m: width_m,
            },
            scene: (0, 0, 0),
        }
    }

    /// The same arm reporting a fixed scene of `objects`, `keypoints` and `goals`.
    pub fn with_scene(mut self, objects: usize, keypoints: usize, goals: usize) -> Self {
        self.scene = (
            objects.min(reflex_core::MAX_OBJECTS),
            keypoints.min(reflex_core::MAX_KEYPOINTS),
            goals.min(reflex_core::MAX_GOALS),
        );
        self
    }
}

impl Robot for StandInArm {
    fn read_state(&mut self, s: &mut RobotState) -> Result<(), RobotError> {
        s.joint_pos_rad = self.q;
        s.joint_vel_rad_s = self.qd;
        s.joint_torque_nm = [0.0; ARM_DOF];
        s.gripper_width_m = self.width_m;
        s.tcp_pose = Pose::from_isometry(&self.model.tcp_pose(&self.q));
        s.stamp_ns = self.t_ns;
        Ok(())
    }

    fn write_command(&mut self, c: &JointCommand) -> Result<(), RobotError> {
        self.commands += 1;
        self.last_command = *c;
        let (w, z, dt) = (self.omega_rad_s, self.zeta, self.dt_s);
        for i in 0..ARM_DOF {
            // Semi-implicit Euler of q'' = w^2 (cmd - q) - 2 z w q'.
            let acc = w * w * (c.joint_pos_rad[i] - self.q[i]) - 2.0 * z * w * self.qd[i];
            self.qd[i] += acc * dt;
            self.q[i] += self.qd[i] * dt;
        }
        self.width_m += (c.gripper_width_m - self.width_m) * (w * dt).min(1.0);
        self.t_ns += (dt * 1e9) as u64;
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.t_ns
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        let (o, k, g) = self.scene;
        obs.num_objects = o;
        for (i, ob) in obs.objects[..o].iter_mut().enumerate() {
            ob.pose = Pose {
                position_m: [0.5, -0.1 + 0.1 * i as f64, 0.025],
                quat_xyzw: [0.0, 0.0, 0.0, 1.0],
            };
            ob.lin_vel_m_s = [0.0; 3];
        }
        obs.num_keypoints = k;
        for (i, p) in obs.keypoints_m[..k].iter_mut().enumerate() {
            *p = [0.5, -0.1 + 0.05 * i as f64, 0.05];
        }
        obs.num_goals = g;
        for (i, p) in obs.goals_m[..g].iter_mut().enumerate() {
            *p = [0.6, 0.1 * i as f64, 0.15];
        }
    }
}
