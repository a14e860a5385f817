//! The safety filter's responses tick by tick: NaN, stale observations, e-stop, workspace.

mod common;

use common::{arm, home_state, limits, DT_S, HOME};
use reflex_core::{JointCommand, ARM_DOF};
use reflex_runtime::{EStop, Faults, Mode, SafetyFilter};

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

#[test]
fn a_nan_command_holds_the_last_safe_command_and_raises_a_fault() {
    let (mut f, _) = filter();
    let state = home_state();
    let mut out = JointCommand::default();
    let mut q = HOME;
    q[0] += 0.001;
    f.filter(&at(q), &state, true, &mut out);
    let safe = out;
    q[3] = f64::NAN;
    let (mode, faults) = f.filter(&at(q), &state, true, &mut out);
    assert_eq!(mode, Mode::Hold);
    assert!(faults.contains(Faults::NON_FINITE_COMMAND));
    assert_eq!(out, safe);
    assert_eq!(f.fault_counts()[0], 1);
}

#[test]
fn the_watchdog_holds_then_brakes() {
    let (mut f, _) = filter();
    let lim = f.limits().clone();
    let mut state = home_state();
    let mut out = JointCommand::default();
    // Moving steadily toward a target far away.
    let mut target = HOME;
    target[0] += 1.0;
    for _ in 0..50 {
        f.filter(&at(target), &state, true, &mut out);
        state.joint_pos_rad = out.joint_pos_rad;
    }
    let moving = out;
    // Observations stop arriving.
    let mut modes = Vec::new();
    for _ in 0..lim.watchdog_brake_ticks + 2 {
        let (mode, _) = f.filter(&at(target), &state, false, &mut out);
        modes.push(mode);
    }
    let hold_at = lim.watchdog_hold_ticks as usize - 1;
    let brake_at = lim.watchdog_brake_ticks as usize - 1;
    assert!(
        modes[..hold_at].iter().all(|m| *m == Mode::Normal),
        "{modes:?}"
    );
    assert!(
        modes[hold_at..brake_at].iter().all(|m| *m == Mode::Hold),
        "{modes:?}"
    );
    assert!(
        modes[brake_at..].iter().all(|m| *m == Mode::Brake),
        "{modes:?}"
    );
    // Braking stops at the measured position: the command no longer advances toward the target.
    assert!(
        out.joint_pos_rad[0]
            <= moving.joint_pos_rad[0] + 1e-9 + lim.max_step_rad * (lim.watchdog_hold_ticks as f64)
    );
    // A fresh observation resumes normal running.
    let (mode, _) = f.filter(&at(target), &state, true, &mut out);
    assert_eq!(mode, Mode::Normal);
}

#[test]
fn no_command_overrides_the_e_stop_until_it_is_cleared() {
    let (mut f, estop) = filter();
    let state = home_state();
    let mut out = JointCommand::default();
    estop.trigger();
    let mut q = HOME;
    q[1] += 0.5;
    for _ in 0..20 {
        let (mode, faults) = f.filter(&at(q), &state, true, &mut out);
        assert_eq!(mode, Mode::Brake);
        assert!(faults.contains(Faults::ESTOP));
        for (q, home) in out.joint_pos_rad.iter().zip(&HOME) {
            assert!((q - home).abs() < 1e-12, "moved while e-stopped");
        }
    }
    estop.clear();
    let (mode, _) = f.filter(&at(q), &state, true, &mut out);
    assert_eq!(mode, Mode::Normal);
    assert!(
        out.joint_pos_rad[1] > HOME[1],
        "resumes toward the request once released"
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
fn bad_limits_are_refused_with_the_field_named() {
    let arm = arm();
    let mut lim = limits(&arm);
    lim.max_step_rad = -1.0;
    let e = SafetyFilter::new(lim, arm.clone(), DT_S, EStop::new(), &home_state())
        .err()
        .expect("refused");
    assert_eq!(e.field, "max_step_rad");
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
        fastest > 0.2,
        "the tool really moved toward the floor ({fastest} m/s)"
    );
    assert!(z_prev < 0.301, "it ended up at the floor, z = {z_prev}");
}
