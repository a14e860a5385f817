//! The runtime's contract, tick by tick, against a kinematic test arm: composition as recorded in
//! transitions, interventions (and operators who go silent or send the wrong length), weight
//! hot-swap (never a mix of versions, never non-finite), the latched e-stop and its re-arm, stale
//! reads, the transition queue's overflow rule, configuration errors, and non-finite policy
//! output.

mod common;

use common::{arm, follower_config, FollowerArm};
use reflex_core::{
    Action, ActionSpace, Interruption, Observation, OperatorCommand, Policy, Transition,
};
use reflex_runtime::{
    Activation, EStop, Faults, Mlp, Mode, NetPolicy, PolicyShapeError, PublishError,
    ResidualPolicy, Runtime, RuntimeConfig, RuntimeError, WeightsSlot,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const OBS: usize = Observation::flat_len(0, 0, 0);

/// A base policy that always proposes the same action.
struct Constant([f32; 7]);

impl Policy for Constant {
    fn act(&mut self, _obs: &Observation, action: &mut Action) {
        action.as_mut_slice().copy_from_slice(&self.0);
    }
}

/// A residual network whose output is `tanh(bias)` whatever its input.
fn bias_only(bias: [f32; 7]) -> Mlp {
    let mut net = Mlp::zeros(&[OBS + 7, 8, 7], Activation::Relu, Activation::Tanh);
    net.layer_mut(1).unwrap().1.copy_from_slice(&bias);
    net
}

fn runtime(
    base: impl Policy + Send + 'static,
    residual: Option<Arc<WeightsSlot>>,
    estop: EStop,
) -> Runtime<FollowerArm> {
    runtime_with(base, residual, estop, |_| {})
}

fn runtime_with(
    base: impl Policy + Send + 'static,
    residual: Option<Arc<WeightsSlot>>,
    estop: EStop,
    tweak: impl FnOnce(&mut RuntimeConfig),
) -> Runtime<FollowerArm> {
    let arm = arm();
    let mut cfg = follower_config(&arm);
    tweak(&mut cfg);
    let robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
    let residual = residual.map(|w| ResidualPolicy::new(w, OBS, 7).unwrap());
    Runtime::new(robot, cfg, arm, Box::new(base), residual, estop).unwrap()
}

fn drain(rt: &Runtime<FollowerArm>) -> Vec<Transition> {
    std::iter::from_fn(|| rt.transitions().pop()).collect()
}

/// A runtime on an arm whose episodes end (truncated) after `steps` policy steps.
fn short_episodes(steps: u64) -> Runtime<FollowerArm> {
    let arm = arm();
    let cfg = follower_config(&arm);
    let mut robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
    robot.episode_steps = steps;
    let base = Constant([0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    Runtime::new(robot, cfg, arm, Box::new(base), None, EStop::new()).unwrap()
}

/// Ticks up to `ticks` times; whether an episode ended.
fn tick_until_done(rt: &mut Runtime<FollowerArm>, ticks: u32) -> bool {
    (0..ticks).any(|_| rt.tick().episode_done)
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn transitions_record_base_plus_scaled_residual_and_a_zero_residual_changes_nothing() {
    let base = [0.2, -0.1, 0.0, 0.0, 0.0, 0.1, 0.5];
    let slot = WeightsSlot::new(bias_only([0.0; 7]));
    let mut rt = runtime(Constant(base), Some(slot.clone()), EStop::new());
    for _ in 0..10 * rt.ticks_per_step() + 1 {
        rt.tick();
    }
    let ts = drain(&rt);
    assert_eq!(ts.len(), 10);
    for (i, t) in ts.iter().enumerate() {
        assert_eq!(t.step, i as u64);
        assert_eq!(
            t.action.as_slice(),
            &base,
            "a zero residual leaves the base exactly"
        );
        assert_eq!(t.base_action.as_slice(), &base);
        assert!(!t.intervened);
        assert!(
            !t.outcome.has_reward(),
            "a real arm's reward is pending by default"
        );
        assert_eq!(t.obs.len(), OBS);
    }
    // Consecutive transitions chain: one's next observation is the next one's observation.
    for w in ts.windows(2) {
        assert_eq!(w[0].next_obs, w[1].obs);
    }

    // Published during step 10 (already acted): a residual of tanh(0.5) in x, at scale 0.5,
    // acts from step 11 on.
    slot.publish(bias_only([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        .unwrap();
    for _ in 0..2 * rt.ticks_per_step() {
        rt.tick();
    }
    let ts = drain(&rt);
    assert_eq!((ts[0].step, ts[1].step), (10, 11));
    assert_eq!(ts[0].action.as_slice(), &base);
    let mut want = base;
    want[0] += 0.5 * 0.5f32.tanh();
    assert!(
        close(ts[1].action.as_slice(), &want),
        "{:?} vs {want:?}",
        ts[1].action
    );
}

/// Holding, not toggling: while the intervene control is held the operator's action is
/// executed, however small; released, the policy is back at the next policy step, with no hold
/// time; and neither switch makes the setpoint jump (bumpless both ways: the safety filter
/// limits no rate, joint or workspace there).
#[test]
fn holding_the_intervene_control_drives_and_releasing_hands_back_at_once_without_a_bump() {
    let base = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
    let mut rt = runtime(Constant(base), None, EStop::new());
    let per_step = rt.ticks_per_step();
    let mut human = Action::zeros(ActionSpace::EeDelta);
    human
        .as_mut_slice()
        .copy_from_slice(&[0.0, 0.1, 0.1, 0.0, 0.0, 0.0, 0.5]);
    let released = OperatorCommand {
        action: human,
        ..OperatorCommand::released(ActionSpace::EeDelta)
    };
    let mut faults_at_switch = Vec::new();
    for step in 0..12u32 {
        for t in 0..per_step {
            // The page sends at its own rate: a command every few ticks, held for steps 3 to 7.
            if t % 4 == 0 {
                let c = if (3..8).contains(&step) {
                    OperatorCommand::held(human)
                } else {
                    released
                };
                rt.operator().send(c);
            }
            let r = rt.tick();
            // A new velocity is ramped in at the acceleration limit, as any change of action
            // is; a jump of the setpoint itself would need the rate or position limits.
            let jump = [Faults::RATE_LIMIT, Faults::JOINT_LIMIT, Faults::WORKSPACE];
            if matches!(step, 3 | 8) && jump.iter().any(|f| r.faults.contains(*f)) {
                faults_at_switch.push((step, t, r.faults));
            }
        }
    }
    let ts = drain(&rt);
    let flags: Vec<bool> = ts.iter().map(|t| t.intervened).collect();
    assert_eq!(
        flags,
        [false, false, false, true, true, true, true, true, false, false, false],
        "the operator acts exactly while the control is held"
    );
    // Below the magnitude threshold, yet executed: the control decides, not the stick.
    assert_eq!(ts[3].action.as_slice(), human.as_slice());
    assert_eq!(ts[8].action.as_slice(), &base, "handed back at once");
    assert!(
        faults_at_switch.is_empty(),
        "the filter had to step in at a switch: {faults_at_switch:?}"
    );
}

/// The operator's success and failure presses end the episode in flight with that label, once
/// per press; counts already in the first command are a baseline, not presses.
#[test]
fn success_and_failure_presses_end_the_episode_with_that_label() {
    let base = [0.0; 7];
    let mut rt = runtime(Constant(base), None, EStop::new());
    let per_step = rt.ticks_per_step();
    let mut c = OperatorCommand::released(ActionSpace::EeDelta);
    c.events.success = 4;
    rt.operator().send(c);
    for _ in 0..3 * per_step {
        rt.tick();
    }
    assert!(
        drain(&rt).iter().all(|t| !t.outcome.done()),
        "the first command's counts end nothing"
    );
    // A success press: the step in flight ends the episode, labelled a success.
    c.events.success = 5;
    rt.operator().send(c);
    assert!(
        tick_until_done(&mut rt, 2 * per_step),
        "the press ended the episode"
    );
    let last = *drain(&rt).last().unwrap();
    assert!(last.outcome.success && last.outcome.terminated && !last.outcome.truncated);
    assert_eq!(rt.stats().successes.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().operator_labels.load(Ordering::Relaxed), 1);
    // The same count again is no new press; a failure press ends the next episode as one.
    rt.begin_episode().unwrap();
    rt.operator().send(c);
    for _ in 0..3 * per_step {
        assert!(!rt.tick().episode_done);
    }
    c.events.failure = 1;
    rt.operator().send(c);
    assert!(tick_until_done(&mut rt, 2 * per_step));
    let last = *drain(&rt).last().unwrap();
    assert!(!last.outcome.success && last.outcome.terminated);
    assert_eq!(last.interrupted, Interruption::None);
    assert_eq!(rt.stats().successes.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().operator_labels.load(Ordering::Relaxed), 2);
    // A re-record press ends the next episode as discarded: not a success, not a label.
    rt.begin_episode().unwrap();
    rt.operator().send(c);
    for _ in 0..2 * per_step {
        assert!(!rt.tick().episode_done);
    }
    c.events.rerecord = 1;
    rt.operator().send(c);
    assert!(
        tick_until_done(&mut rt, 2 * per_step),
        "the re-record press ended the episode"
    );
    let last = *drain(&rt).last().unwrap();
    assert!(!last.outcome.success && last.outcome.terminated);
    assert_eq!(last.interrupted, Interruption::Discarded);
    assert_eq!(rt.stats().discarded_episodes.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().operator_labels.load(Ordering::Relaxed), 2);
}

/// A success detector ends the episode in flight, terminated, keeping the judge's own
/// success on the step; while one decides, the judge's success does not end an episode.
#[test]
fn a_success_detector_ends_the_episode_and_the_judge_no_longer_does() {
    let mut rt = runtime(Constant([0.0; 7]), None, EStop::new());
    let per_step = rt.ticks_per_step();
    rt.set_end_on_success(false);
    for _ in 0..3 * per_step {
        assert!(!rt.tick().episode_done);
    }
    assert!(drain(&rt).iter().all(|t| !t.outcome.done()));
    rt.end_episode();
    assert!(
        tick_until_done(&mut rt, 2 * per_step),
        "the detector ended it"
    );
    let last = *drain(&rt).last().unwrap();
    assert!(last.outcome.terminated && !last.outcome.truncated && !last.outcome.success);
    assert_eq!(rt.stats().detector_ends.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().successes.load(Ordering::Relaxed), 0);
    // Between episodes a request ends nothing; the next episode runs on.
    rt.end_episode();
    rt.begin_episode().unwrap();
    for _ in 0..3 * per_step {
        assert!(!rt.tick().episode_done);
    }
    assert_eq!(rt.stats().detector_ends.load(Ordering::Relaxed), 1);

    // The judge says success from step 2: with a detector deciding, the episode goes on
    // (the steps still say success); without one, it ends there.
    let arm = arm();
    let cfg = follower_config(&arm);
    let mut robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
    robot.success_from = 2;
    let mut rt = Runtime::new(
        robot,
        cfg,
        arm,
        Box::new(Constant([0.0; 7])),
        None,
        EStop::new(),
    )
    .unwrap();
    rt.set_end_on_success(false);
    for _ in 0..6 * per_step {
        assert!(!rt.tick().episode_done);
    }
    let ts = drain(&rt);
    assert!(
        ts.iter()
            .skip(2)
            .all(|t| t.outcome.success && !t.outcome.done()),
        "{ts:?}"
    );
    rt.set_end_on_success(true);
    assert!(tick_until_done(&mut rt, 2 * per_step));
    let last = *drain(&rt).last().unwrap();
    assert!(last.outcome.success && last.outcome.terminated);
}

/// With a success hold, the judge's first success does not end the episode: the arm holds
/// still for that many steps (the policy asked, its action not executed; normal data), then
/// the episode ends, a success only if the judge still says so.
#[test]
fn a_success_hold_keeps_the_finished_scene_then_ends_as_the_judge_says_then() {
    let moving = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
    let episode = |success_until: u64, hold: u32| {
        let arm = arm();
        let cfg = follower_config(&arm);
        let per_step = (cfg.servo_rate_hz / cfg.policy_rate_hz) as u32;
        let mut robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
        robot.success_from = 2;
        robot.success_until = success_until;
        let mut rt = Runtime::new(
            robot,
            cfg,
            arm,
            Box::new(Constant(moving)),
            None,
            EStop::new(),
        )
        .unwrap();
        rt.set_success_hold(hold);
        assert!(tick_until_done(&mut rt, 10 * per_step));
        let successes = rt.stats().successes.load(Ordering::Relaxed);
        (drain(&rt), successes)
    };
    // Without a hold the success ends the episode at once (the step judged at step 2).
    let (ts, successes) = episode(0, 0);
    assert_eq!(ts.len(), 2);
    assert!(ts[1].outcome.success && ts[1].outcome.terminated);
    assert_eq!(successes, 1);

    // Held for 3 steps: the success step and 3 hold steps, the last ending it as a success.
    let (ts, successes) = episode(0, 3);
    assert_eq!(ts.len(), 5, "{ts:?}");
    assert!(ts[1].outcome.success && !ts[1].outcome.done());
    assert!(ts[2..4]
        .iter()
        .all(|t| t.outcome.success && !t.outcome.done()));
    let last = ts[4];
    assert!(last.outcome.success && last.outcome.terminated && !last.outcome.truncated);
    assert_eq!(successes, 1);
    for t in &ts[2..] {
        // The policy was asked; the arm held (no motion, the gripper's command kept).
        assert!(close(t.base_action.as_slice(), &moving), "{t:?}");
        assert!(t.action.as_slice()[..6].iter().all(|a| *a == 0.0), "{t:?}");
        assert_eq!(t.action.as_slice()[6], ts[1].action.as_slice()[6]);
        assert_eq!(t.interrupted, Interruption::None);
        assert!(!t.intervened);
    }
    assert!(close(ts[1].action.as_slice(), &moving));

    // The success lapses during the hold: the episode still ends after the hold, truncated
    // and not a success.
    let (ts, successes) = episode(4, 3);
    assert_eq!(ts.len(), 5, "{ts:?}");
    let last = ts[4];
    assert!(!last.outcome.success && last.outcome.truncated && !last.outcome.terminated);
    assert_eq!(successes, 0);
}

#[test]
fn an_operator_takes_over_above_the_threshold_for_the_hold_time_then_hands_back() {
    let base = [0.1; 7];
    let mut rt = runtime(Constant(base), None, EStop::new());
    let mut human = Action::zeros(ActionSpace::EeDelta);
    human
        .as_mut_slice()
        .copy_from_slice(&[0.0, 0.0, 0.9, 0.0, 0.0, 0.0, -1.0]);
    let per_step = rt.ticks_per_step();
    rt.tick(); // step 0 starts
               // Steps 1..=12: the operator's input arrives at step 1 and keeps arriving (the link is
               // alive) but falls below the threshold; the hold is 0.05 s = 5 steps.
    rt.operator().send(OperatorCommand::by_magnitude(human));
    let mut quiet = human;
    quiet.as_mut_slice().fill(0.0);
    for i in 0..12 * per_step {
        rt.tick();
        if i % 20 == 19 {
            rt.operator().send(OperatorCommand::by_magnitude(quiet));
        }
    }
    let ts = drain(&rt);
    let flags: Vec<bool> = ts.iter().map(|t| t.intervened).collect();
    assert_eq!(
        flags,
        [false, true, true, true, true, true, false, false, false, false, false, false]
    );
    assert_eq!(
        ts[1].action.as_slice(),
        human.as_slice(),
        "the executed action is the human's"
    );
    for t in &ts[1..6] {
        assert_eq!(t.interrupted, Interruption::None);
        assert_eq!(
            t.base_action.as_slice(),
            &base,
            "the base is still recorded"
        );
    }
    assert_eq!(ts[6].action.as_slice(), &base);
    assert_eq!(rt.stats().intervened_steps.load(Ordering::Relaxed), 5);
}

#[test]
fn hot_swapped_weights_are_never_seen_mixed() {
    // Version k: layer 0 outputs k everywhere (bias k), layer 1 sums them (8k) and adds 1000k.
    // A pass that mixed versions j != k would give 8j + 1000k, which is no 1008 multiple.
    fn version(k: u32) -> Mlp {
        let mut net = Mlp::zeros(&[4, 8, 1], Activation::Identity, Activation::Identity);
        net.layer_mut(0).unwrap().1.fill(k as f32);
        let (w, b) = net.layer_mut(1).unwrap();
        w.fill(1.0);
        b[0] = 1000.0 * k as f32;
        net
    }
    let slot = WeightsSlot::new(version(1));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (slot, stop) = (slot.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 1;
            while !stop.load(Ordering::Relaxed) {
                k = k % 100 + 1;
                slot.publish(version(k)).unwrap();
            }
        })
    };
    let mut scratch = slot.snapshot().scratch();
    let mut out = [0.0f32];
    let mut seen = std::collections::HashSet::new();
    // At least 200,000 passes, and on until more than 10 versions were seen (bounded at 20 s):
    // on a loaded 2-core machine the publisher may get little CPU time during the first ones.
    let started = std::time::Instant::now();
    let mut passes = 0u64;
    while passes < 200_000
        || (seen.len() <= 10 && started.elapsed() < std::time::Duration::from_secs(20))
    {
        passes += 1;
        slot.forward(&mut scratch, &[1.0; 4], &mut out).unwrap();
        let k = out[0] / 1008.0;
        assert!(
            k == k.round() && (1.0..=100.0).contains(&k),
            "output {} mixes two versions",
            out[0]
        );
        seen.insert(k as u32);
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(
        seen.len() > 10,
        "the reader saw the weights change ({} versions)",
        seen.len()
    );

    // The pass right after a publish uses the new weights.
    slot.publish(version(77)).unwrap();
    slot.forward(&mut scratch, &[1.0; 4], &mut out).unwrap();
    assert_eq!(out[0], 1008.0 * 77.0);
}

#[test]
fn weights_of_another_shape_are_refused_and_shapes_are_checked_against_the_task() {
    let slot = WeightsSlot::new(bias_only([0.0; 7]));
    let err = slot
        .publish(Mlp::zeros(
            &[OBS + 7, 16, 7],
            Activation::Relu,
            Activation::Tanh,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("[29, 8, 7]"), "{err}");
    assert_eq!(slot.version(), 0);
    let wrong = WeightsSlot::new(Mlp::zeros(&[39, 8, 7], Activation::Relu, Activation::Tanh));
    let err = NetPolicy::new(wrong, OBS, 7).err().unwrap();
    assert_eq!(
        err,
        PolicyShapeError::Inputs {
            what: "the task's flat observation",
            expected: OBS,
            got: 39
        }
    );
}

#[test]
fn the_e_stop_brakes_whatever_the_policy_or_the_operator_ask() {
    let estop = EStop::new();
    let mut rt = runtime(
        Constant([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
        None,
        estop.clone(),
    );
    for _ in 0..300 {
        rt.tick();
    }
    drain(&rt);
    estop.press();
    let mut human = Action::zeros(ActionSpace::EeDelta);
    human.as_mut_slice().fill(1.0);
    let mut last = *rt.last_command();
    let first = rt.tick();
    assert!(
        first.aborted && first.episode_done,
        "the press aborts the episode"
    );
    let ts = drain(&rt);
    assert_eq!(ts.len(), 1, "the step in flight leaves, marked");
    assert_eq!(ts[0].interrupted, Interruption::EStop);
    for i in 0..2000 {
        rt.operator().send(OperatorCommand::by_magnitude(human));
        let r = rt.tick();
        assert_eq!(r.mode, Mode::Brake);
        let c = *rt.last_command();
        let moved: f64 = (0..7)
            .map(|j| (c.joint_pos_rad[j] - last.joint_pos_rad[j]).abs())
            .fold(0.0, f64::max);
        // Braking stops the command within its limits; after a while nothing moves.
        if i > 1000 {
            assert!(
                moved == 0.0,
                "tick {i}: the command still moves {moved} rad"
            );
        }
        last = c;
    }
    assert!(
        rt.stats().fault_counts()[9] >= 2000,
        "e-stop faults counted"
    );
    assert!(drain(&rt).is_empty(), "no transition while pressed");
    // Released: still held, nothing emitted, even with a new episode open.
    estop.release();
    rt.begin_episode().unwrap();
    for _ in 0..200 {
        let r = rt.tick();
        assert_eq!(r.mode, Mode::Brake);
        assert!(!r.policy_step);
    }
    assert!(drain(&rt).is_empty());
    assert_eq!(rt.stats().estop_aborts.load(Ordering::Relaxed), 1);
}

#[test]
fn after_a_rearm_the_policy_restarts_from_the_measured_state_ramped_in() {
    //! The old e-stop resumed the policy at full output the moment it was cleared.
    let estop = EStop::new();
    let push = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let mut rt = runtime(Constant(push), None, estop.clone());
    estop.press();
    rt.tick();
    estop.release();
    estop.rearm().unwrap();
    rt.begin_episode().unwrap();
    drain(&rt);
    let start = rt.robot().q;
    let per_step = rt.ticks_per_step() as usize;
    // The tool's advance per policy step grows over the 1 s ramp (10 Hz policy: ~10 steps).
    let tcp_x = |rt: &Runtime<FollowerArm>| rt.robot().model.tcp_pose(&rt.robot().q).translation.x;
    let mut advances = Vec::new();
    let mut x = tcp_x(&rt);
    for _ in 0..12 {
        for _ in 0..per_step {
            let r = rt.tick();
            assert_eq!(r.mode, Mode::Normal);
        }
        let nx = tcp_x(&rt);
        advances.push(nx - x);
        x = nx;
    }
    assert!(rt.stats().rearms.load(Ordering::Relaxed) >= 1);
    assert_ne!(rt.robot().q, start, "it moves again");
    assert!(
        advances[1] < 0.5 * advances[9],
        "the output ramps in: advances per step {advances:?}"
    );
}

#[test]
fn a_stale_read_holds_where_the_arm_is_not_at_the_episode_start() {
    //! The old runtime aimed the filter at the episode's start pose on a failed read.
    let mut rt = runtime(
        Constant([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        None,
        EStop::new(),
    );
    let start = *rt.last_command();
    for _ in 0..40 * rt.ticks_per_step() {
        rt.tick();
    }
    let moved = *rt.last_command();
    let away: f64 = (0..7)
        .map(|j| (moved.joint_pos_rad[j] - start.joint_pos_rad[j]).abs())
        .sum();
    assert!(
        away > 0.05,
        "the arm moved away from the start ({away} rad)"
    );
    // Two reads fail (fewer than the watchdog's hold ticks).
    rt.robot().fail_next.store(2, Ordering::Relaxed);
    let mut prev = moved;
    for _ in 0..2 {
        rt.tick();
        let c = *rt.last_command();
        for j in 0..7 {
            let toward_start = (c.joint_pos_rad[j] - prev.joint_pos_rad[j])
                * (start.joint_pos_rad[j] - prev.joint_pos_rad[j]).signum();
            assert!(
                toward_start <= 1e-6,
                "joint {j} moved back toward the episode's start pose"
            );
        }
        prev = c;
    }
}

#[test]
fn an_operator_action_of_the_wrong_length_is_refused_counted_and_not_intervened() {
    let base = [0.1; 7];
    let mut rt = runtime(Constant(base), None, EStop::new());
    rt.tick();
    let mut wrong = Action::zeros(ActionSpace::JointDelta);
    wrong.as_mut_slice().fill(0.9);
    rt.operator().send(OperatorCommand::by_magnitude(wrong));
    for _ in 0..3 * rt.ticks_per_step() {
        rt.tick();
    }
    let ts = drain(&rt);
    assert!(
        ts.iter().all(|t| !t.intervened),
        "never marked as intervened"
    );
    assert!(ts.iter().all(|t| t.action.as_slice() == base));
    assert_eq!(
        rt.stats().refused_operator_actions.load(Ordering::Relaxed),
        1
    );
    assert_eq!(rt.stats().intervened_steps.load(Ordering::Relaxed), 0);
}

#[test]
fn a_silent_operator_ends_the_takeover_within_the_link_timeout_and_the_arm_holds() {
    //! The old runtime replayed the operator's last action for the whole hold time after their
    //! messages stopped.
    let base = [0.0; 7];
    let mut rt = runtime_with(Constant(base), None, EStop::new(), |c| {
        c.intervention_hold_s = 1.0; // a long hold: 10 policy steps
        c.intervention_link_timeout_s = 0.1;
    });
    rt.tick();
    let mut human = Action::zeros(ActionSpace::EeDelta);
    human.as_mut_slice()[0] = 0.9;
    rt.operator().send(OperatorCommand::by_magnitude(human));
    // One message, then silence. Within 0.1 s (100 ticks) the takeover ends.
    let mut ended_at = None;
    for t in 0..600 {
        rt.tick();
        if ended_at.is_none() && rt.stats().operator_link_lost.load(Ordering::Relaxed) == 1 {
            ended_at = Some(t);
        }
    }
    let ended_at = ended_at.expect("the takeover ended");
    assert!(ended_at <= 101, "ended after {ended_at} ticks");
    assert!(rt.at_rest(), "the arm holds");
    let ts = drain(&rt);
    // 100 Hz policy: the 0.1 s link timeout is 10 steps; the 1 s hold would have been 100.
    let intervened = ts.iter().filter(|t| t.intervened).count();
    assert!(
        (9..=11).contains(&intervened),
        "the human action was not replayed past the timeout ({intervened} steps)"
    );
    assert!(
        ts.iter()
            .any(|t| t.interrupted == Interruption::OperatorLost),
        "the held steps are marked"
    );
    // The operator is back (below the threshold): the policy drives again.
    let mut quiet = human;
    quiet.as_mut_slice().fill(0.0);
    rt.operator().send(OperatorCommand::by_magnitude(quiet));
    for _ in 0..2 * rt.ticks_per_step() {
        rt.tick();
    }
    let ts = drain(&rt);
    assert_eq!(ts.last().unwrap().interrupted, Interruption::None);
}

/// A base policy that drives with a constant action, but only while `ready` says so (a camera
/// that stops and starts again).
struct Blinking {
    action: [f32; 7],
    ready: Arc<AtomicBool>,
}

impl Policy for Blinking {
    fn ready(&mut self, _obs: &Observation) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn act(&mut self, _obs: &Observation, action: &mut Action) {
        assert!(
            self.ready.load(Ordering::Relaxed),
            "asked to act while not ready"
        );
        action.as_mut_slice().copy_from_slice(&self.action);
    }
}

#[test]
fn a_policy_whose_input_is_stale_is_not_asked_to_act_and_the_arm_holds() {
    let ready = Arc::new(AtomicBool::new(true));
    let mut rt = runtime(
        Blinking {
            action: [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ready: ready.clone(),
        },
        None,
        EStop::new(),
    );
    for _ in 0..5 * rt.ticks_per_step() {
        rt.tick();
    }
    let driving = {
        let before = rt.last_command().joint_pos_rad;
        for _ in 0..5 * rt.ticks_per_step() {
            rt.tick();
        }
        let after = rt.last_command().joint_pos_rad;
        before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    assert!(
        driving > 1e-2,
        "the policy drives the arm ({driving} rad in 5 steps)"
    );
    // The camera stops: every policy step holds, and the arm comes to rest.
    ready.store(false, Ordering::Relaxed);
    drain(&rt);
    // (`at_rest` is too strict here: holding the tool where it is, the end-effector mapper may
    // still move the joints by micro-radians within the arm's redundancy.)
    let moved = |rt: &mut Runtime<FollowerArm>, steps: u32| -> f64 {
        let before = rt.last_command().joint_pos_rad;
        for _ in 0..steps * rt.ticks_per_step() {
            rt.tick();
        }
        let after = rt.last_command().joint_pos_rad;
        before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let braking = moved(&mut rt, 30);
    let held = moved(&mut rt, 30);
    assert!(held < 1e-3, "the arm holds: {held} rad in 30 held steps");
    assert!(
        braking > 10.0 * held,
        "{braking} rad while braking, {held} held"
    );
    let held = drain(&rt);
    assert!(held.len() >= 55, "{} steps", held.len());
    assert!(held
        .iter()
        .skip(1)
        .all(|t| t.interrupted == Interruption::InputStale));
    let stale = rt.stats().stale_policy_inputs.load(Ordering::Relaxed);
    assert!((59..=61).contains(&stale), "{stale} stale steps counted");
    // The camera is back: the policy drives again.
    ready.store(true, Ordering::Relaxed);
    for _ in 0..3 * rt.ticks_per_step() {
        rt.tick();
    }
    let ts = drain(&rt);
    assert_eq!(ts.last().unwrap().interrupted, Interruption::None);
    assert!(moved(&mut rt, 5) > 1e-2, "moving again");
}

#[test]
fn runtime_settings_that_make_no_sense_are_refused_naming_the_field() {
    let arm = arm();
    type Tweak = Box<dyn Fn(&mut RuntimeConfig)>;
    let cases: Vec<(Tweak, &str)> = vec![
        (
            Box::new(|c| c.control.max_linear_speed_m_s = f64::NAN),
            "control.max_linear_speed_m_s",
        ),
        (
            Box::new(|c| c.control.dls_damping = -1.0),
            "control.dls_damping",
        ),
        (
            Box::new(|c| c.control.workspace_min_m[1] = 2.0),
            "control.workspace_min_m[1]",
        ),
        (
            Box::new(|c| c.intervention_link_timeout_s = 0.0),
            "intervention_link_timeout_s",
        ),
        (Box::new(|c| c.rearm_ramp_s = f64::INFINITY), "rearm_ramp_s"),
        (Box::new(|c| c.residual_scale = f32::NAN), "residual_scale"),
        (Box::new(|c| c.policy_rate_hz = 300.0), "policy_rate_hz"),
        (
            Box::new(|c| c.rest_joint_pos_rad[4] = f64::NAN),
            "rest_joint_pos_rad[4]",
        ),
    ];
    for (tweak, field) in cases {
        let mut cfg = follower_config(&arm);
        tweak(&mut cfg);
        let robot = FollowerArm::new(0.001);
        let err = Runtime::new(
            robot,
            cfg,
            arm.clone(),
            Box::new(Constant([0.0; 7])),
            None,
            EStop::new(),
        )
        .err()
        .expect("refused");
        match err {
            RuntimeError::Config { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other}"),
        }
    }
}

#[test]
fn a_full_transition_queue_refuses_the_newest_and_counts_it() {
    let mut rt = runtime(Constant([0.0; 7]), None, EStop::new());
    for _ in 0..200 * rt.ticks_per_step() + 1 {
        rt.tick();
    }
    let s = rt.transitions().stats();
    assert_eq!(s.pushed, 64);
    assert_eq!(s.dropped, 200 - 64);
    let ts = drain(&rt);
    assert_eq!(
        ts.first().unwrap().step,
        0,
        "the oldest 64 are kept (wait-free ring)"
    );
    assert_eq!(ts.last().unwrap().step, 63);
}

#[test]
fn non_finite_weights_are_never_published() {
    let slot = WeightsSlot::new(bias_only([0.1; 7]));
    let mut bad = bias_only([0.1; 7]);
    bad.layer_mut(0).unwrap().0[3] = f32::NAN;
    assert_eq!(
        slot.publish(bad),
        Err(PublishError::NonFinite {
            layer: 0,
            what: "weight"
        })
    );
    assert_eq!(slot.version(), 0);
}

#[test]
fn non_finite_policy_output_is_counted_and_never_reaches_the_robot() {
    let mut rt = runtime(
        Constant([
            f32::NAN,
            f32::INFINITY,
            0.0,
            0.0,
            0.0,
            f32::NEG_INFINITY,
            0.0,
        ]),
        None,
        EStop::new(),
    );
    for _ in 0..50 * rt.ticks_per_step() {
        rt.tick();
        assert!(rt
            .last_command()
            .joint_pos_rad
            .iter()
            .all(|q| q.is_finite()));
        assert!(rt.robot().q.iter().all(|q| q.is_finite()));
    }
    assert_eq!(rt.stats().non_finite_actions.load(Ordering::Relaxed), 150);
    for t in drain(&rt) {
        assert!(t.action.as_slice().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_nan_gripper_holds_its_width_and_a_nan_residual_keeps_the_base() {
    //! The old runtime replaced a NaN component by 0, which half-opens the gripper, and a NaN
    //! residual turned the whole composed component into NaN (then 0).
    struct NanGripper;
    impl Policy for NanGripper {
        fn act(&mut self, _obs: &Observation, action: &mut Action) {
            action
                .as_mut_slice()
                .copy_from_slice(&[0.2, 0.0, 0.0, 0.0, 0.0, 0.0, f32::NAN]);
        }
    }
    // A residual with finite weights whose output 0 overflows to inf - inf = NaN.
    let mut residual = bias_only([0.0; 7]);
    {
        let (_, b) = residual.layer_mut(0).unwrap();
        b[0] = 3e38;
        b[1] = 3e38;
    }
    {
        let (w, _) = residual.layer_mut(1).unwrap();
        w[0] = 10.0;
        w[1] = -10.0;
    }
    let run = |base: Box<dyn Policy + Send>, residual: Option<Mlp>| {
        let arm = arm();
        let cfg = follower_config(&arm);
        let mut robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
        robot.width_m = 0.0; // the gripper starts closed
        let residual = residual.map(|m| ResidualPolicy::new(WeightsSlot::new(m), OBS, 7).unwrap());
        let mut rt = Runtime::new(robot, cfg, arm, base, residual, EStop::new()).unwrap();
        for _ in 0..20 * rt.ticks_per_step() {
            rt.tick();
        }
        let ts = drain(&rt);
        assert!(ts.len() >= 19);
        (rt, ts)
    };
    let (rt, ts) = run(Box::new(NanGripper), None);
    for t in &ts {
        assert_eq!(t.action.as_slice()[6], -1.0, "the gripper held closed");
    }
    assert!(rt.robot().width_m < 1e-3, "closed: {}", rt.robot().width_m);
    let closed = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0];
    let (rt, ts) = run(Box::new(Constant(closed)), Some(residual));
    for t in &ts {
        assert!(
            (t.action.as_slice()[0] - 0.2).abs() < 1e-6,
            "the base kept its component: {:?}",
            t.action
        );
    }
    let n = rt.stats().non_finite_residuals.load(Ordering::Relaxed);
    assert!(n >= 19, "{n} non-finite residual components counted");
}

#[test]
fn a_stale_read_when_an_episode_starts_holds_and_retries_instead_of_ending_the_run() {
    //! The old `run` returned the read's error, ending `reflex run` on one stale read that
    //! happened to fall on an episode boundary.
    let mut rt = short_episodes(5);
    let fail_next = rt.robot().fail_next.clone();
    let mut ended = 0;
    rt.run(std::time::Duration::from_secs(20), false, |_, outcome| {
        assert!(outcome.truncated);
        ended += 1;
        // The next episode's first read and the two after it fail.
        fail_next.store(3, Ordering::Relaxed);
        ended < 4
    });
    assert_eq!(ended, 4, "the run went on past the failed starts");
    let s = rt.stats();
    assert_eq!(s.episodes.load(Ordering::Relaxed), 4);
    assert!(s.read_errors.load(Ordering::Relaxed) >= 9);
    assert_eq!(s.policy_steps.load(Ordering::Relaxed), 4 * 5);
}

#[test]
fn the_policy_step_hook_sees_every_step_once_with_the_id_its_transition_carries() {
    let mut rt = short_episodes(4);
    let mut seen = Vec::new();
    let mut ended = 0;
    rt.run_observed(
        std::time::Duration::from_secs(20),
        false,
        |rt| seen.push(rt.step_in_flight()),
        |_, _| {
            ended += 1;
            ended < 2
        },
    );
    let ids: Vec<(u64, u64)> = drain(&rt).iter().map(|t| (t.episode, t.step)).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert_eq!(seen, ids, "one call per step, before its transition");
}

#[test]
fn a_robot_that_never_reports_or_allows_less_than_configured_does_not_start() {
    let arm = arm();
    let mut cfg = follower_config(&arm);
    cfg.start_timeout_s = 0.05;
    let new = |robot: FollowerArm, cfg: RuntimeConfig| {
        Runtime::new(
            robot,
            cfg,
            arm.clone(),
            Box::new(Constant([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])),
            None,
            EStop::new(),
        )
    };
    // Silent: every read fails for longer than the wait.
    let silent = FollowerArm::new(0.001);
    silent.fail_next.store(u32::MAX, Ordering::Relaxed);
    match new(silent, cfg.clone()) {
        Err(RuntimeError::Start(reflex_core::StartError::NoState { last, waited_s })) => {
            assert!(last.contains("stale"), "{last}");
            assert!(waited_s >= 0.05);
        }
        other => panic!("{:?}", other.err()),
    }
    // Its own limits are narrower than the configured ones: refused naming the field.
    let mut narrow = FollowerArm::new(0.001);
    let mut own = arm.limits;
    own[3].velocity = cfg.limits.joint_vel_max_rad_s[3] * 0.5;
    narrow.own = Some(own);
    match new(narrow, cfg.clone()) {
        Err(RuntimeError::Start(reflex_core::StartError::BeyondRobot { field, .. })) => {
            assert_eq!(field, "joint_vel_max_rad_s[3]");
        }
        other => panic!("{:?}", other.err()),
    }
    // Its own limits are the URDF's: it starts, and a shutdown brakes to rest and releases it.
    let mut same = FollowerArm::new(0.001);
    same.own = Some(arm.limits);
    let mut rt = new(same, cfg).unwrap();
    for _ in 0..300 {
        rt.tick();
    }
    assert!(!rt.at_rest(), "moving when the session ends");
    assert!(rt.shutdown(5_000, false));
    assert!(rt.estop().is_latched());
    assert!(rt.robot().stopped);
}
