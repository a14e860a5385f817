//! The safety filter's responses tick by tick: NaN, stale observations, holds, brakes, the
//! e-stop, the tool box and the whole arm's envelope.

// Joint loops index several parallel arrays (command, previous command, velocity) at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{arm, home_state, limits, outside_by, DT_S, HOME};
use reflex_core::{JointCommand, SafetyLimits, ARM_DOF};
use reflex_runtime::{EStop, Faults, Mode, RearmError, SafetyFilter};

fn filter() -> (SafetyFilter, EStop) {
    let arm = arm();
    let e = EStop::new();
    let f = SafetyFilter::new(limits(&arm), arm, DT_S, e.clone(), &home_state()).unwrap();
    (f, e)
}

fn at(q: [f64; ARM_DOF]) -> JointCommand {
    JointCommand {
        joint_pos_rad: q,
        gripper_width_m: 0.04,
    }
}

/// Runs the filter toward `target` for `ticks` ticks with a state that follows the command;
/// returns the last command and its per-joint velocity.
fn drive(f: &mut SafetyFilter, target: [f64; ARM_DOF], ticks: usize) -> (JointCommand, [f64; 7]) {
    let mut state = home_state();
    let mut out = JointCommand::default();
    let mut prev = *f.last_command();
    let mut vel = [0.0; 7];
    for _ in 0..ticks {
        f.filter(&at(target), &state, true, &mut out);
        for i in 0..7 {
            vel[i] = (out.joint_pos_rad[i] - prev.joint_pos_rad[i]) / DT_S;
        }
        state.joint_pos_rad = out.joint_pos_rad;
        prev = out;
    }
    (out, vel)
}

/// Checks that every tick from `prev` (moving at `vel`) keeps the speed and acceleration
/// limits and decelerates; returns the velocities after.
fn check_stopping(
    lim: &SafetyLimits,
    prev: &JointCommand,
    out: &JointCommand,
    vel: &mut [f64; 7],
    tick: usize,
) {
    for i in 0..7 {
        let v = (out.joint_pos_rad[i] - prev.joint_pos_rad[i]) / DT_S;
        assert!(
            v.abs() <= lim.joint_vel_max_rad_s[i] + 1e-9,
            "tick {tick}: joint {i} at {v} rad/s, over its speed limit"
        );
        let dv = (v - vel[i]).abs();
        assert!(
            dv <= lim.joint_acc_max_rad_s2[i] * DT_S + 1e-9,
            "tick {tick}: joint {i} changed speed by {dv} rad/s in one tick"
        );
        assert!(
            v.abs() <= vel[i].abs() + 1e-12,
            "tick {tick}: joint {i} sped up"
        );
        vel[i] = v;
    }
}

#[test]
fn a_nan_component_brakes_that_component_while_the_others_go_on() {
    //! The old filter held the whole command on any NaN, in one tick.
    let (mut f, _) = filter();
    let mut target = HOME;
    target[0] += 0.5;
    target[3] += 0.5;
    let (moving, vel) = drive(&mut f, target, 100);
    assert!(vel[0] > 0.5 && vel[3] > 0.5, "{vel:?}");
    let mut wish = at(target);
    wish.joint_pos_rad[3] = f64::NAN;
    wish.gripper_width_m = f64::NAN;
    let mut out = JointCommand::default();
    let (mode, faults) = f.filter(&wish, &home_state(), true, &mut out);
    assert_eq!(mode, Mode::Normal);
    assert!(faults.contains(Faults::NON_FINITE_COMMAND));
    let v0 = (out.joint_pos_rad[0] - moving.joint_pos_rad[0]) / DT_S;
    let v3 = (out.joint_pos_rad[3] - moving.joint_pos_rad[3]) / DT_S;
    assert!(v0 >= vel[0] - 1e-9, "joint 0 goes on toward its target");
    assert!(
        (v3 - (vel[3] - f.limits().joint_acc_max_rad_s2[3] * DT_S)).abs() < 1e-9,
        "joint 3 brakes at its acceleration limit, it does not stop dead"
    );
    assert_eq!(
        out.gripper_width_m, moving.gripper_width_m,
        "the gripper holds"
    );
    assert_eq!(f.fault_counts()[0], 1);
}

#[test]
fn a_hold_decelerates_within_the_limits_instead_of_stopping_in_one_tick() {
    //! The old hold repeated the last command: a joint at full speed stopped within one tick.
    let (mut f, _) = filter();
    let lim = f.limits().clone();
    let mut target = HOME;
    target[0] += 1.0;
    let (mut prev, mut vel) = drive(&mut f, target, 200);
    assert!(
        vel[0] > 1.0,
        "moving fast before the hold ({} rad/s)",
        vel[0]
    );
    let mut out = JointCommand::default();
    let mut ticks = 0;
    while !f.at_rest() {
        let (mode, _) = f.hold(&home_state(), true, &mut out);
        assert_eq!(mode, Mode::Hold);
        check_stopping(&lim, &prev, &out, &mut vel, ticks);
        prev = out;
        ticks += 1;
        assert!(ticks < 1000, "never came to rest");
    }
    assert!(ticks > 50, "a controlled stop takes time ({ticks} ticks)");
}

#[test]
fn the_watchdog_holds_then_brakes_within_the_limits_and_never_jumps_back() {
    //! The old brake moved up to `max_step_rad` (0.05 rad) per tick back toward the last
    //! measurement: 23 times the URDF speed at 1 kHz, and backwards.
    let (mut f, _) = filter();
    let lim = f.limits().clone();
    let mut target = HOME;
    target[0] += 1.0;
    let (mut prev, mut vel) = drive(&mut f, target, 200);
    // The last measurement is old and far behind the command (the arm lagged).
    let mut stale_state = home_state();
    stale_state.joint_pos_rad[0] = HOME[0] - 0.3;
    let mut out = JointCommand::default();
    let mut modes = Vec::new();
    for tick in 0..400 {
        let (mode, faults) = f.filter(&at(target), &stale_state, false, &mut out);
        modes.push(mode);
        if mode == Mode::Brake {
            assert!(faults.contains(Faults::WATCHDOG_BRAKE));
        }
        if mode == Mode::Normal {
            // The first stale ticks still track (within the limits).
            for (i, v) in vel.iter_mut().enumerate() {
                *v = (out.joint_pos_rad[i] - prev.joint_pos_rad[i]) / DT_S;
            }
        } else {
            check_stopping(&lim, &prev, &out, &mut vel, tick);
        }
        assert!(
            out.joint_pos_rad[0] >= prev.joint_pos_rad[0] - 1e-12,
            "tick {tick}: braking moved back toward the old measurement"
        );
        prev = out;
    }
    let hold_at = lim.watchdog_hold_ticks as usize - 1;
    let brake_at = lim.watchdog_brake_ticks as usize - 1;
    assert!(
        modes[..hold_at].iter().all(|m| *m == Mode::Normal),
        "{modes:?}"
    );
    assert!(modes[hold_at..brake_at].iter().all(|m| *m == Mode::Hold));
    assert!(modes[brake_at..].iter().all(|m| *m == Mode::Brake));
    assert!(f.at_rest());
    // A fresh observation resumes normal running.
    let (mode, _) = f.filter(&at(target), &home_state(), true, &mut out);
    assert_eq!(mode, Mode::Normal);
}

#[test]
fn the_e_stop_brakes_within_the_limits_and_stays_latched_until_rearmed() {
    //! The old e-stop brake stepped 0.05 rad per tick toward the measurement, and clearing the
    //! flag resumed the policy at once.
    let (mut f, estop) = filter();
    let lim = f.limits().clone();
    let mut target = HOME;
    target[1] += 0.5;
    let (mut prev, mut vel) = drive(&mut f, target, 150);
    estop.press();
    let mut out = JointCommand::default();
    for tick in 0..500 {
        let (mode, faults) = f.filter(&at(target), &home_state(), true, &mut out);
        assert_eq!(mode, Mode::Brake);
        assert!(faults.contains(Faults::ESTOP));
        check_stopping(&lim, &prev, &out, &mut vel, tick);
        prev = out;
    }
    assert!(f.at_rest());
    let stopped = out;
    assert_eq!(estop.rearm(), Err(RearmError::StillPressed));
    estop.release();
    for _ in 0..50 {
        let (mode, _) = f.filter(&at(target), &home_state(), true, &mut out);
        assert_eq!(mode, Mode::Brake, "releasing the button resumes nothing");
        assert_eq!(out, stopped);
    }
    estop.rearm().unwrap();
    let (mode, _) = f.filter(&at(target), &home_state(), true, &mut out);
    assert_eq!(mode, Mode::Normal);
    assert!(out.joint_pos_rad[1] > stopped.joint_pos_rad[1]);
    assert!(
        out.joint_pos_rad[1] - stopped.joint_pos_rad[1]
            <= lim.joint_acc_max_rad_s2[1] * DT_S * DT_S + 1e-12,
        "and starts again within its acceleration limit"
    );
}

#[test]
fn the_tool_stops_at_the_workspace_floor() {
    let arm = arm();
    let mut lim = limits(&arm);
    lim.workspace_min_m[2] = 0.3;
    let mut f =
        SafetyFilter::new(lim.clone(), arm.clone(), DT_S, EStop::new(), &home_state()).unwrap();
    let mut state = home_state();
    let mut out = JointCommand::default();
    // Shoulder and elbow down: the tool heads for the table.
    let mut q = HOME;
    q[1] += 0.9;
    q[3] += 0.6;
    let mut hit = false;
    for _ in 0..3000 {
        let (_, faults) = f.filter(&at(q), &state, true, &mut out);
        hit |= faults.contains(Faults::WORKSPACE);
        state.joint_pos_rad = out.joint_pos_rad;
        let z = arm.tcp_pose(&out.joint_pos_rad).translation.z;
        assert!(z >= 0.3 - 1e-9, "tool at z = {z}");
    }
    assert!(hit, "the request never met the floor");
    let z = arm.tcp_pose(&out.joint_pos_rad).translation.z;
    assert!(z < 0.31, "stopped short of the floor at z = {z}");
}

#[test]
fn the_wrist_stays_above_the_table_not_only_the_tool() {
    //! The old filter checked the tool centre point alone: with the tool inside its box, the
    //! wrist's links could be driven into the table.
    let arm = arm();
    let mut lim = limits(&arm);
    lim.arm_box_min_m[2] = 0.0;
    lim.workspace_min_m[2] = 0.0;
    lim.link_clearance_m = 0.30; // link origins at least 30 cm above the table
    assert_eq!(outside_by(&arm, &lim, &HOME), 0.0);
    let mut f =
        SafetyFilter::new(lim.clone(), arm.clone(), DT_S, EStop::new(), &home_state()).unwrap();
    // Shoulder and elbow down: the wrist (links 5 to 7) heads below 0.30 m before the tool
    // reaches its floor.
    let mut q = HOME;
    q[1] += 0.9;
    q[3] += 0.6;
    let mut state = home_state();
    let mut out = JointCommand::default();
    let mut hit = false;
    let mut frames = reflex_core::Frames::default();
    for _ in 0..3000 {
        let (_, faults) = f.filter(&at(q), &state, true, &mut out);
        hit |= faults.contains(Faults::WORKSPACE);
        state.joint_pos_rad = out.joint_pos_rad;
        arm.forward(&out.joint_pos_rad, &mut frames);
        for (i, l) in frames.links.iter().enumerate() {
            let z = l.translation.z;
            assert!(z >= 0.30 - 1e-9, "link {} origin at z = {z}", i + 1);
        }
    }
    assert!(hit, "the floor was reached");
    let lowest = frames
        .links
        .iter()
        .map(|l| l.translation.z)
        .fold(f64::INFINITY, f64::min);
    assert!(lowest < 0.31, "the wrist went down to the floor ({lowest})");
    assert!(
        frames.tcp.translation.z > 0.05,
        "and the tool was still far above its own floor ({})",
        frames.tcp.translation.z
    );
}

#[test]
fn bad_limits_are_refused_with_the_field_named() {
    let arm = arm();
    let mut lim = limits(&arm);
    lim.max_step_rad = -1.0;
    let e = SafetyFilter::new(lim, arm.clone(), DT_S, EStop::new(), &home_state())
        .err()
        .expect("refused");
    assert_eq!(e.field, "max_step_rad");
    let mut lim = limits(&arm);
    lim.arm_box_min_m[2] = f64::NAN;
    let e = SafetyFilter::new(lim, arm.clone(), DT_S, EStop::new(), &home_state())
        .err()
        .expect("refused");
    assert_eq!(e.field, "arm_box_min_m[2]");
    let e = SafetyFilter::new(limits(&arm), arm, f64::NAN, EStop::new(), &home_state())
        .err()
        .expect("refused");
    assert_eq!(e.field, "dt_s");
}

#[test]
fn the_tool_slows_down_before_the_workspace_floor_instead_of_hitting_it() {
    let arm = arm();
    let mut lim = limits(&arm);
    lim.workspace_min_m[2] = 0.3;
    let a = lim.tool_decel_max_m_s2;
    let mut f =
        SafetyFilter::new(lim.clone(), arm.clone(), DT_S, EStop::new(), &home_state()).unwrap();
    let mut state = home_state();
    let mut out = JointCommand::default();
    let mut q = HOME;
    q[1] += 0.9;
    q[3] += 0.6;
    let mut z_prev = arm.tcp_pose(&HOME).translation.z;
    let mut fastest = 0.0f64;
    for tick in 0..3000 {
        f.filter(&at(q), &state, true, &mut out);
        state.joint_pos_rad = out.joint_pos_rad;
        let z = arm.tcp_pose(&out.joint_pos_rad).translation.z;
        let v_down = (z_prev - z) / DT_S;
        fastest = fastest.max(v_down);
        // Never faster toward the floor than lets the tool stop before it (5% for the
        // curvature of a joint-space step, 1 mm/s of slack).
        let d = (z_prev - 0.3).max(0.0);
        let stop_v = -a * DT_S + (a * a * DT_S * DT_S + 2.0 * a * d).sqrt();
        assert!(
            v_down <= 1.05 * stop_v + 1.1e-3,
            "tick {tick}: {v_down} m/s toward the floor {d} m away (limit {stop_v})"
        );
        z_prev = z;
    }
    assert!(
        fastest > 0.1,
        "the tool really moved toward the floor ({fastest} m/s)"
    );
    assert!(z_prev < 0.301, "it ended up at the floor, z = {z_prev}");
}
