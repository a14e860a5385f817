//! For any sequence of requests (targets anywhere, jumps, NaN, infinities, no request at all),
//! against a plant that lags its command (random first- or second-order joint dynamics), with
//! stale and non-finite observations long enough to reach the watchdog's hold and brake, and the
//! e-stop pressed, released and re-armed: every command that leaves the safety filter is finite;
//! keeps every joint inside its limits less the margin; moves each joint no more than the step
//! and speed limits allow per tick; changes each joint's velocity by no more than the
//! acceleration limit allows per tick, in every mode; decelerates whenever it stops (hold,
//! brake, e-stop); keeps the gripper in range and under its speed limit; and keeps the tool
//! inside the tool box and every link origin and fingertip inside the arm's envelope. Each case
//! starts anywhere in the joint ranges, with boxes a few millimetres to decimetres around the
//! arm, at a 1, 10 or 100 ms period, so the sequences meet every wall. Every bound is computed
//! here from the limits and the model, not by the filter's helpers.

// Joint loops index several parallel arrays (limits, command, previous command) at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{arm, envelope, limits, outside_by, ur_arm, Plant, DT_S};
use proptest::prelude::*;
use reflex_core::{JointCommand, RobotState, ARM_DOF};
use reflex_runtime::{EStop, Faults, Mode, SafetyFilter};

fn joint_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -0.3..0.3f64,             // offsets from the current command (when relative)
        3 => -3.5..3.5f64,             // anywhere, absolute
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e300),
        1 => any::<f64>(),
    ]
}

#[derive(Clone, Debug)]
enum Request {
    Track {
        q: [f64; ARM_DOF],
        relative: bool,
        width: f64,
    },
    Hold,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum EStopEvent {
    Press,
    Release,
    Rearm,
}

#[derive(Clone, Debug)]
struct Tick {
    request: Request,
    fresh: bool,
    nan_state: bool,
    estop: Option<EStopEvent>,
    /// The tick is repeated this many times (sustained motions, long stale streaks).
    repeat: u8,
}

fn tick() -> impl Strategy<Value = Tick> {
    let request = prop_oneof![
        8 => (
            prop::array::uniform7(joint_value()),
            any::<bool>(),
            prop_oneof![0.0..0.1f64, Just(f64::NAN), any::<f64>()],
        )
            .prop_map(|(q, relative, width)| Request::Track { q, relative, width }),
        1 => Just(Request::Hold),
    ];
    (
        request,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.03),
        prop_oneof![
            30 => Just(None),
            1 => Just(Some(EStopEvent::Press)),
            1 => Just(Some(EStopEvent::Release)),
            1 => Just(Some(EStopEvent::Rearm)),
        ],
        prop_oneof![4 => Just(1u8), 1 => 1u8..40],
    )
        .prop_map(|(request, fresh, nan_state, estop, repeat)| Tick {
            request,
            fresh,
            nan_state,
            estop,
            repeat,
        })
}

fn plant() -> impl Strategy<Value = (bool, f64, f64, f64)> {
    (any::<bool>(), 0.05..1.0f64, 5.0..80.0f64, 0.3..1.2f64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_requests_leaves_the_limits_in_any_mode(
        start in prop::array::uniform7(0.0..1.0f64),
        tool_half_m in prop::array::uniform3(0.002..0.05f64),
        arm_margin_m in prop::array::uniform3(0.002..0.3f64),
        clearance_m in 0.0..0.05f64,
        dt_s in prop_oneof![Just(DT_S), Just(0.01), Just(0.1)],
        (hold_ticks, brake_extra) in (1u32..4, 0u32..6),
        (second_order, alpha, omega, zeta) in plant(),
        ticks in prop::collection::vec(tick(), 1..60),
        six_dof in any::<bool>(),
    ) {
        // The shipped 7-DoF arm, or a 6-DoF one whose seventh slot is inert.
        let arm = if six_dof { ur_arm() } else { arm() };
        let mut lim = limits(&arm);
        lim.watchdog_hold_ticks = hold_ticks;
        lim.watchdog_brake_ticks = hold_ticks + brake_extra;
        let estop = EStop::new();
        let mut q0 = [0.0; ARM_DOF];
        for i in 0..ARM_DOF {
            let lo = lim.joint_pos_min_rad[i] + lim.joint_margin_rad;
            let hi = lim.joint_pos_max_rad[i] - lim.joint_margin_rad;
            q0[i] = lo + start[i] * (hi - lo);
        }
        // Boxes around where the arm starts, so the sequences meet their walls.
        let pts = envelope(&arm, &q0);
        for k in 0..3 {
            lim.workspace_min_m[k] = pts[7][k] - tool_half_m[k];
            lim.workspace_max_m[k] = pts[7][k] + tool_half_m[k];
            let lo = pts.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
            let hi = pts.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
            lim.arm_box_min_m[k] = lo - arm_margin_m[k];
            lim.arm_box_max_m[k] = hi + arm_margin_m[k];
        }
        let link_floor = (0..7).map(|i| pts[i][2]).fold(f64::INFINITY, f64::min);
        lim.link_clearance_m = clearance_m;
        lim.arm_box_min_m[2] = lim.arm_box_min_m[2].min(link_floor - clearance_m - arm_margin_m[2]);
        prop_assume!(outside_by(&arm, &lim, &q0) == 0.0);

        // A stable discretisation of the plant at this period.
        let omega = omega.min(1.0 / dt_s);
        let mut p = Plant { q: q0, qd: [0.0; ARM_DOF], width_m: 0.04, second_order, alpha, omega, zeta };
        let mut state = RobotState { joint_pos_rad: q0, gripper_width_m: 0.04, ..Default::default() };
        let mut filter = SafetyFilter::new(lim.clone(), arm.clone(), dt_s, estop.clone(), &state).unwrap();
        let mut prev = *filter.last_command();
        let mut prev_vel = [0.0; ARM_DOF];
        let mut out = JointCommand::default();
        let mut stale = 0u32;
        let (wlo, whi) = (lim.gripper_width_range_m[0], lim.gripper_width_range_m[1]);
        for t in ticks.iter().flat_map(|t| std::iter::repeat_n(t, t.repeat as usize)) {
            match t.estop {
                Some(EStopEvent::Press) => estop.press(),
                Some(EStopEvent::Release) => estop.release(),
                Some(EStopEvent::Rearm) => { let _ = estop.rearm(); }
                None => {}
            }
            let latched = estop.is_latched();
            state.joint_pos_rad = p.q;
            state.joint_vel_rad_s = p.qd;
            state.gripper_width_m = p.width_m;
            if t.nan_state {
                state.joint_pos_rad[2] = f64::NAN;
            }
            stale = if t.fresh { 0 } else { stale + 1 };
            let (mode, faults) = match &t.request {
                Request::Track { q, relative, width } => {
                    let mut wish = JointCommand { joint_pos_rad: *q, gripper_width_m: *width };
                    if *relative {
                        for i in 0..ARM_DOF {
                            wish.joint_pos_rad[i] += prev.joint_pos_rad[i];
                        }
                    }
                    filter.filter(&wish, &state, t.fresh, &mut out)
                }
                Request::Hold => filter.hold(&state, t.fresh, &mut out),
            };
            let ctx = format!("{mode:?} {faults:?} dt {dt_s} -> {out:?}");
            // Finite, inside the joint limits less the margin, gripper in range.
            for i in 0..ARM_DOF {
                let q = out.joint_pos_rad[i];
                prop_assert!(q.is_finite(), "{}", ctx);
                prop_assert!(q >= lim.joint_pos_min_rad[i] + lim.joint_margin_rad - 1e-9
                    && q <= lim.joint_pos_max_rad[i] - lim.joint_margin_rad + 1e-9, "joint {} at {} {}", i, q, ctx);
            }
            prop_assert!(out.gripper_width_m.is_finite()
                && out.gripper_width_m >= wlo - 1e-12 && out.gripper_width_m <= whi + 1e-12, "{}", ctx);
            prop_assert!((out.gripper_width_m - prev.gripper_width_m).abs()
                <= lim.gripper_speed_max_m_s * dt_s + 1e-12, "gripper too fast {}", ctx);
            // Step, speed and acceleration limits, whatever the mode.
            let mut vel = [0.0; ARM_DOF];
            for i in 0..ARM_DOF {
                let dq = out.joint_pos_rad[i] - prev.joint_pos_rad[i];
                let step_max = lim.max_step_rad.min(lim.joint_vel_max_rad_s[i] * dt_s);
                prop_assert!(dq.abs() <= step_max + 1e-9, "joint {} stepped {} {}", i, dq, ctx);
                vel[i] = dq / dt_s;
                let dv = (vel[i] - prev_vel[i]).abs();
                prop_assert!(dv <= lim.joint_acc_max_rad_s2[i] * dt_s * (1.0 + 1e-9) + 1e-9,
                    "joint {} velocity jumped {} rad/s in one tick {}", i, dv, ctx);
                if mode != Mode::Normal {
                    prop_assert!(vel[i].abs() <= prev_vel[i].abs() + 1e-9,
                        "joint {} sped up while stopping {}", i, ctx);
                }
            }
            // The whole arm inside its envelope, the tool inside its box.
            let outside = outside_by(&arm, &lim, &out.joint_pos_rad);
            prop_assert!(outside <= 1e-9, "outside by {} m {}", outside, ctx);
            // The modes the inputs call for.
            if latched {
                prop_assert_eq!(mode, Mode::Brake);
                prop_assert!(faults.contains(Faults::ESTOP));
            } else if stale >= lim.watchdog_brake_ticks {
                prop_assert_eq!(mode, Mode::Brake);
                prop_assert!(faults.contains(Faults::WATCHDOG_BRAKE));
            } else if stale >= lim.watchdog_hold_ticks
                || !state.is_finite()
                || matches!(t.request, Request::Hold)
            {
                prop_assert_eq!(mode, Mode::Hold);
            } else {
                prop_assert_eq!(mode, Mode::Normal);
            }
            p.step(&out, dt_s);
            prev = out;
            prev_vel = vel;
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
