//! For any sequence of requested commands — NaN, infinities, huge values, jumps — and any mix of
//! stale, non-finite and e-stopped ticks, every command that leaves the safety filter is finite,
//! inside the joint and gripper limits, inside the workspace box, and within the per-tick step
//! and speed limits; in normal running it also respects the acceleration limit. Each case starts
//! anywhere in the joint ranges, in a workspace box of a few millimetres to a few centimetres
//! around the tool, at a 1, 10 or 100 ms period, so the sequences meet every wall.

// Joint loops index several parallel arrays (limits, command, previous command) at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{arm, home_state, limits, DT_S};
use proptest::prelude::*;
use reflex_core::{JointCommand, RobotState, ARM_DOF};
use reflex_runtime::{EStop, Faults, Mode, SafetyFilter};

fn joint_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -0.05..0.05f64,           // small offsets from the current command (added below)
        3 => -3.5..3.5f64,             // anywhere, absolute
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e300),
        1 => Just(-1e300),
        1 => any::<f64>(),
    ]
}

#[derive(Clone, Debug)]
struct Tick {
    q: [f64; ARM_DOF],
    relative: bool,
    width: f64,
    fresh: bool,
    nan_state: bool,
    estop: Option<bool>,
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        prop::array::uniform7(joint_value()),
        any::<bool>(),
        prop_oneof![-1.0..1.0f64, Just(f64::NAN), any::<f64>()],
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.03),
        prop_oneof![20 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
    )
        .prop_map(|(q, relative, width, fresh, nan_state, estop)| Tick {
            q,
            relative,
            width,
            fresh,
            nan_state,
            estop,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_requests_leaves_the_limits(
        start in prop::array::uniform7(0.0..1.0f64),
        box_half_m in prop::array::uniform3(0.002..0.03f64),
        dt_s in prop_oneof![Just(DT_S), Just(0.01), Just(0.1)],
        ticks in prop::collection::vec(tick(), 1..12),
    ) {
        let arm = arm();
        let mut lim = limits(&arm);
        let estop = EStop::new();
        // Start anywhere in the joint ranges, in a workspace box a few millimetres to a few
        // centimetres around the tool, so the sequences meet joint limits and box walls.
        let mut state = home_state();
        for i in 0..ARM_DOF {
            let lo = lim.joint_pos_min_rad[i] + lim.joint_margin_rad;
            let hi = lim.joint_pos_max_rad[i] - lim.joint_margin_rad;
            state.joint_pos_rad[i] = lo + start[i] * (hi - lo);
        }
        let tcp0 = arm.tcp_pose(&state.joint_pos_rad).translation.vector;
        for k in 0..3 {
            lim.workspace_min_m[k] = tcp0[k] - box_half_m[k];
            lim.workspace_max_m[k] = tcp0[k] + box_half_m[k];
        }
        let mut filter = SafetyFilter::new(lim.clone(), arm.clone(), dt_s, estop.clone(), &state).unwrap();
        let mut prev = *filter.last_command();
        let mut prev_vel = [0.0; ARM_DOF];
        let mut prev_mode = Mode::Normal;
        let mut out = JointCommand::default();
        let step_max: Vec<f64> = (0..ARM_DOF).map(|i| lim.max_step_rad.min(lim.joint_vel_max_rad_s[i] * dt_s)).collect();
        for t in &ticks {
            match t.estop {
                Some(true) => estop.trigger(),
                Some(false) => estop.clear(),
                None => {}
            }
            let mut wish = JointCommand { joint_pos_rad: t.q, gripper_width_m: t.width };
            if t.relative {
                for i in 0..ARM_DOF {
                    wish.joint_pos_rad[i] += prev.joint_pos_rad[i];
                }
            }
            if t.nan_state {
                state.joint_pos_rad[2] = f64::NAN;
            }
            let (mode, faults) = filter.filter(&wish, &state, t.fresh, &mut out);
            // Finite and inside the joint and gripper limits.
            prop_assert!(lim.admits(&out), "{:?} {:?} -> {:?}", mode, faults, out);
            // Inside the workspace box (the start pose is inside it).
            let tcp = arm.tcp_pose(&out.joint_pos_rad).translation.vector;
            for k in 0..3 {
                prop_assert!(tcp[k] >= lim.workspace_min_m[k] - 1e-9 && tcp[k] <= lim.workspace_max_m[k] + 1e-9,
                    "tool at {:?} outside the box ({:?} {:?})", tcp, mode, faults);
            }
            // Step and speed limits, whatever the mode.
            for i in 0..ARM_DOF {
                let dq = (out.joint_pos_rad[i] - prev.joint_pos_rad[i]).abs();
                prop_assert!(dq <= step_max[i] + 1e-9, "joint {} stepped {} ({:?})", i, dq, mode);
            }
            // Acceleration limit in normal running. Stopping is exempt: hold, brake, e-stop, and a
            // step cut short at the workspace wall.
            let vel: Vec<f64> = (0..ARM_DOF).map(|i| (out.joint_pos_rad[i] - prev.joint_pos_rad[i]) / dt_s).collect();
            if mode == Mode::Normal && prev_mode == Mode::Normal && !faults.contains(Faults::WORKSPACE) {
                for i in 0..ARM_DOF {
                    let dv = (vel[i] - prev_vel[i]).abs();
                    prop_assert!(dv <= lim.joint_acc_max_rad_s2[i] * dt_s + 1e-6,
                        "joint {} velocity jumped {} rad/s in one tick ({:?})", i, dv, faults);
                }
            }
            if estop.is_set() {
                prop_assert_eq!(mode, Mode::Brake);
                prop_assert!(faults.contains(Faults::ESTOP));
            }
            // The arm follows its command (what a real one does, roughly); sometimes it lags.
            if !t.nan_state {
                state.joint_pos_rad = out.joint_pos_rad;
            } else {
                state.joint_pos_rad[2] = out.joint_pos_rad[2];
            }
            prev = out;
            prev_mode = mode;
            prev_vel.copy_from_slice(&vel);
            if mode != Mode::Normal {
                prev_vel = [0.0; ARM_DOF];
            }
        }
    }
}

#[test]
fn a_state_outside_the_limits_is_pulled_inside_at_start() {
    let arm = arm();
    let lim = limits(&arm);
    let state = RobotState {
        joint_pos_rad: [9.0, -9.0, f64::NAN, -2.0, 0.0, 2.0, 0.0],
        ..Default::default()
    };
    let filter = SafetyFilter::new(lim.clone(), arm, DT_S, EStop::new(), &state).unwrap();
    assert!(lim.admits(filter.last_command()));
}
