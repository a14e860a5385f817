//! The runtime's contract, tick by tick, against a kinematic test arm: composition as recorded in
//! transitions, interventions, weight hot-swap (never a mix of versions), the e-stop, the
//! transition queue's overflow rule, and non-finite policy output.

mod common;

use common::{arm, follower_config, FollowerArm};
use reflex_core::{Action, ActionSpace, Observation, Policy, Transition};
use reflex_runtime::{
    Activation, EStop, Mlp, Mode, NetPolicy, PolicyShapeError, ResidualPolicy, Runtime, WeightsSlot,
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
    let arm = arm();
    let cfg = follower_config(&arm);
    let robot = FollowerArm::new(1.0 / cfg.rate_hz);
    let residual = residual.map(|w| ResidualPolicy::new(w, OBS, 7).unwrap());
    Runtime::new(robot, cfg, arm, Box::new(base), residual, estop).unwrap()
}

fn drain(rt: &Runtime<FollowerArm>) -> Vec<Transition> {
    std::iter::from_fn(|| rt.transitions().pop()).collect()
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
    rt.intervention().set(human);
    // Steps 1..=12: the operator's input arrives once, at step 1; the hold is 0.05 s = 5 steps.
    for _ in 0..12 * per_step {
        rt.tick();
    }
    let ts = drain(&rt);
    let flags: Vec<bool> = ts.iter().map(|t| t.intervened).collect();
    assert_eq!(
        flags,
        [false, true, true, true, true, true, false, false, false, false, false, false]
    );
    for t in &ts[1..6] {
        assert_eq!(
            t.action.as_slice(),
            human.as_slice(),
            "the executed action is the human's"
        );
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
    estop.trigger();
    let mut human = Action::zeros(ActionSpace::EeDelta);
    human.as_mut_slice().fill(1.0);
    let mut last = *rt.last_command();
    for i in 0..2000 {
        rt.intervention().set(human);
        let r = rt.tick();
        assert_eq!(r.mode, Mode::Brake);
        let c = *rt.last_command();
        let moved: f64 = (0..7)
            .map(|j| (c.joint_pos_rad[j] - last.joint_pos_rad[j]).abs())
            .fold(0.0, f64::max);
        // Braking converges on the measured position; after a short while nothing moves.
        if i > 200 {
            assert!(
                moved < 1e-9,
                "tick {i}: the command still moves {moved} rad"
            );
        }
        last = c;
    }
    assert!(
        rt.stats().fault_counts()[9] >= 2000,
        "e-stop faults counted"
    );
}

#[test]
fn a_full_transition_queue_drops_the_oldest_and_counts_it() {
    let mut rt = runtime(Constant([0.0; 7]), None, EStop::new());
    for _ in 0..200 * rt.ticks_per_step() + 1 {
        rt.tick();
    }
    let s = rt.transitions().stats();
    assert_eq!(s.pushed, 200);
    assert_eq!(s.dropped, 200 - 64);
    let ts = drain(&rt);
    assert_eq!(ts.first().unwrap().step, 136, "the newest 64 are kept");
    assert_eq!(ts.last().unwrap().step, 199);
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
