//! Shared test set-up: the shipped arm, its default limits, a start state inside the workspace.

use reflex_core::{ArmModel, RobotState, SafetyLimits};

pub const HOME: [f64; 7] = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];
pub const DT_S: f64 = 0.001;

pub fn arm() -> ArmModel {
    let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
    ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap()
}

pub fn limits(arm: &ArmModel) -> SafetyLimits {
    SafetyLimits::from_model(arm)
}

pub fn home_state() -> RobotState {
    RobotState {
        joint_pos_rad: HOME,
        gripper_width_m: 0.04,
        ..Default::default()
    }
}
