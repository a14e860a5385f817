//! The control thread allocates nothing per tick: a counting global allocator proves it, for
//! the parts alone and for the whole `Runtime` tick (robot I/O, observation, base and residual
//! networks, composition with an intervention active, action mapping, safety filter, transition
//! ring) while other threads contend for every seam at full speed: an operator writing actions
//! in a tight loop, a publisher swapping the residual's weights back to back, a learner draining
//! transitions, and an e-stop pressed and re-armed. The tick takes each seam's wait-free side
//! (a triple buffer, an SPSC ring, an atomic pointer load), so none of them can make it wait.
//! Only allocations (and frees) on the thread under test are counted.

mod common;

use common::{arm, follower_config, home_state, limits, FollowerArm, DT_S, HOME};
use reflex_core::{Action, ActionSpace, JointCommand, OperatorCommand};
use reflex_runtime::{
    Activation, Composer, EStop, Mlp, NetPolicy, ResidualPolicy, Runtime, SafetyFilter, WeightsSlot,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

struct Counting;

thread_local! {
    // Per-thread counters, const-initialised and without destructors, so touching them never
    // allocates. Tests run on parallel threads; each counts only its own.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

fn bump(c: &'static std::thread::LocalKey<Cell<u64>>) {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not ours.
    let _ = c.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(&FREES);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&ALLOCATIONS);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts allocations and frees made by this thread while `f` runs.
fn count_on_this_thread(f: impl FnOnce()) -> (u64, u64) {
    let (a0, f0) = (ALLOCATIONS.with(Cell::get), FREES.with(Cell::get));
    f();
    (ALLOCATIONS.with(Cell::get) - a0, FREES.with(Cell::get) - f0)
}

/// A network with small deterministic pseudo-random weights (so outputs are not trivially 0).
fn random_mlp(dims: &[usize], seed: u32) -> Mlp {
    let mut net = Mlp::zeros(dims, Activation::Relu, Activation::Tanh);
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for l in 0..net.num_layers() {
        let (w, b) = net.layer_mut(l).unwrap();
        for v in w.iter_mut().chain(b.iter_mut()) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = ((x % 2001) as f32 / 1000.0 - 1.0) * 0.15;
        }
    }
    net
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn networks_composition_and_safety_filter_allocate_nothing_per_tick() {
    let arm = arm();
    let estop = EStop::new();
    let mut state = home_state();
    let mut filter = SafetyFilter::new(limits(&arm), arm, DT_S, estop.clone(), &state).unwrap();
    let mut composer = Composer::new(0.3, 0.5, 200);
    let mut policy = Mlp::zeros(&[39, 256, 256, 8], Activation::Relu, Activation::Tanh);
    let mut residual_net = Mlp::zeros(&[47, 256, 256, 8], Activation::Relu, Activation::Tanh);
    let mut obs = [0.1f32; 39];
    let mut obs_and_base = [0.0f32; 47];
    let mut base = Action::zeros(ActionSpace::JointDelta);
    let mut residual = Action::zeros(ActionSpace::JointDelta);
    let mut human = Action::zeros(ActionSpace::JointDelta);
    let mut action = Action::zeros(ActionSpace::JointDelta);
    let mut wish = JointCommand::default();
    let mut out = JointCommand::default();

    let mut intervened = 0;
    let (allocations, _) = count_on_this_thread(|| {
        for t in 0..10_000u32 {
            let phase = t as f32 * 0.01;
            obs[0] = phase.sin();
            policy.forward(&obs, base.as_mut_slice()).unwrap();
            base.as_mut_slice()[0] += 0.2 * phase.sin();
            obs_and_base[..39].copy_from_slice(&obs);
            obs_and_base[39..].copy_from_slice(base.as_slice());
            residual_net
                .forward(&obs_and_base, residual.as_mut_slice())
                .unwrap();
            residual.as_mut_slice()[1] += 0.5 * phase.cos();
            human
                .as_mut_slice()
                .fill(if t % 1000 < 300 { 0.9 } else { 0.0 });
            let command = OperatorCommand::by_magnitude(human);
            let with_human = (t % 1000 < 300).then_some(&command);
            if composer
                .compose(&base, &residual, with_human, &mut action)
                .intervened
            {
                intervened += 1;
            }
            for (i, a) in action.as_slice()[..7].iter().enumerate() {
                wish.joint_pos_rad[i] = HOME[i] + 0.2 * *a as f64;
            }
            wish.gripper_width_m = 0.04 + 0.04 * action.as_slice()[7] as f64;
            if t % 997 == 0 {
                wish.joint_pos_rad[4] = f64::NAN;
            }
            filter.filter(&wish, &state, t % 50 != 49, &mut out);
            state.joint_pos_rad = out.joint_pos_rad;
        }
    });
    assert_eq!(allocations, 0, "{allocations} allocations in 10,000 ticks");
    assert!(
        intervened > 2000,
        "the intervention path ran ({intervened} ticks)"
    );
    assert!(
        filter.fault_counts().iter().sum::<u64>() > 0,
        "the fault paths ran"
    );
}

#[test]
fn a_whole_runtime_tick_allocates_nothing_while_every_seam_is_contended_at_full_speed() {
    let arm = arm();
    let cfg = follower_config(&arm);
    let mut robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
    robot.fail_every = 97; // stale reads: the watchdog path runs too
    robot.success_from = 1; // episodes end in success after a hold (below), between e-stops
    let obs_dim = reflex_core::Observation::flat_len(0, 0, 0);
    let base = NetPolicy::new(
        WeightsSlot::new(random_mlp(&[obs_dim, 256, 256, 7], 1)),
        obs_dim,
        7,
    )
    .unwrap();
    let residual_slot = WeightsSlot::new(random_mlp(&[obs_dim + 7, 256, 256, 7], 2));
    let residual = ResidualPolicy::new(residual_slot.clone(), obs_dim, 7).unwrap();
    let estop = EStop::new();
    let mut rt = Runtime::new(
        robot,
        cfg,
        arm,
        Box::new(base),
        Some(residual),
        estop.clone(),
    )
    .unwrap();
    rt.set_success_hold(2);

    let stop = Arc::new(AtomicBool::new(false));
    // What the other threads have done so far, for the loop below to wait on.
    let (swapped, drained_n, sent_n) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let swapper = {
        let (slot, stop, swapped) = (residual_slot.clone(), stop.clone(), swapped.clone());
        std::thread::spawn(move || {
            let mut k = 3;
            while !stop.load(Ordering::Relaxed) {
                slot.publish(random_mlp(&[obs_dim + 7, 256, 256, 7], k))
                    .unwrap();
                k += 1;
                swapped.fetch_add(1, Ordering::Relaxed);
            }
            k
        })
    };
    let learner = {
        let (q, stop, drained_n) = (rt.transitions().clone(), stop.clone(), drained_n.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while q.pop().is_some() {
                    n += 1;
                    drained_n.fetch_add(1, Ordering::Relaxed);
                }
            }
            n
        })
    };
    let operator = {
        let (op, stop, sent_n) = (rt.operator().clone(), stop.clone(), sent_n.clone());
        std::thread::spawn(move || {
            let mut human = Action::zeros(ActionSpace::EeDelta);
            let mut sent = 0u64;
            let start = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // Takes over for a third of the time, then stays below the threshold.
                let v = if start.elapsed().as_millis() % 30 < 10 {
                    0.9
                } else {
                    0.1
                };
                human
                    .as_mut_slice()
                    .copy_from_slice(&[0.0, v, 0.0, 0.0, 0.0, 0.0, -1.0]);
                op.send(OperatorCommand::by_magnitude(human));
                sent += 1;
                sent_n.fetch_add(1, Ordering::Relaxed);
            }
            sent
        })
    };
    let presser = {
        let (e, stop) = (estop.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(40));
                e.press();
                std::thread::sleep(std::time::Duration::from_millis(1));
                e.release();
                let _ = e.rearm();
            }
        })
    };

    // Warm-up outside the count: arc-swap registers this thread on its first load.
    for _ in 0..100 {
        rt.tick();
    }
    // At least 10,000 ticks, and on until every seam has shown its work: the e-stop round
    // twice, the operator taking over, the policy stepping, weights swapped, transitions
    // drained, operator actions taken (bounded: on a loaded machine the other threads may get
    // little CPU. A presser starved while the e-stop was latched once left a CI run's 10,000
    // ticks stopped, with too few policy steps; the loop now waits for the work instead.)
    let mut ticks = 0u64;
    let (allocations, frees) = count_on_this_thread(|| {
        let busy = |rt: &Runtime<FollowerArm>| {
            let s = rt.stats();
            s.rearms.load(Ordering::Relaxed) < 2
                || s.intervened_steps.load(Ordering::Relaxed) < 20
                || s.policy_steps.load(Ordering::Relaxed) < 300
                || s.read_errors.load(Ordering::Relaxed) <= 50
                || swapped.load(Ordering::Relaxed) <= 10
                || drained_n.load(Ordering::Relaxed) <= 50
                || sent_n.load(Ordering::Relaxed) <= 1000
                || rt.operator().stats().popped <= 10
                || s.successes.load(Ordering::Relaxed) < 5
        };
        while ticks < 10_000 || (busy(&rt) && ticks < 2_000_000) {
            let r = rt.tick();
            // A failed read (one in 97) leaves the episode to start on a later tick.
            if r.episode_done && !rt.estop().is_latched() {
                let _ = rt.begin_episode();
            }
            ticks += 1;
        }
    });
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    let drained = learner.join().unwrap();
    let sent = operator.join().unwrap();
    presser.join().unwrap();
    assert_eq!(
        allocations, 0,
        "{allocations} allocations on the control thread in {ticks} ticks"
    );
    assert_eq!(
        frees, 0,
        "{frees} frees on the control thread in {ticks} ticks"
    );

    let s = rt.stats();
    assert!(
        swaps > 10,
        "the weights were swapped during the run ({swaps})"
    );
    assert!(drained > 50, "transitions reached the learner ({drained})");
    assert!(sent > 1000, "the operator wrote at full speed ({sent})");
    assert!(
        rt.operator().stats().popped > 10,
        "the tick took the operator's newest actions"
    );
    assert!(
        s.intervened_steps.load(Ordering::Relaxed) > 10,
        "the intervention path ran"
    );
    assert!(
        s.read_errors.load(Ordering::Relaxed) > 50,
        "the stale-read path ran"
    );
    let (aborts, rearms) = (
        s.estop_aborts.load(Ordering::Relaxed),
        s.rearms.load(Ordering::Relaxed),
    );
    assert!(
        aborts > 0 && rearms > 0,
        "the e-stop path ran ({aborts} aborts, {rearms} re-arms, {} presses)",
        estop.presses()
    );
    assert!(s.policy_steps.load(Ordering::Relaxed) >= 300);
    assert!(
        s.successes.load(Ordering::Relaxed) >= 5,
        "episodes ended in success after their hold"
    );
}

/// A policy that sees pixels (two 64x64 RGB cameras stacked, three strided convolutions, a
/// linear head with LayerNorm, then an MLP on the features and the proprioception) allocates
/// nothing per frame either.
#[test]
fn the_pixel_policy_allocates_nothing_per_frame() {
    use reflex_policy::{stack_frames, ConvEncoder, EncoderParams, EncoderShape, PixelNet};
    let shape = EncoderShape::small(64, 2);
    let mut seed = 0x9E37_79B9u32;
    let mut next = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed as f32 / u32::MAX as f32 - 0.5) * 0.3
            })
            .collect()
    };
    let mut in_ch = shape.channels;
    let convs = shape
        .convs
        .iter()
        .map(|c| {
            let w = next(c.channels * in_ch * c.kernel * c.kernel);
            in_ch = c.channels;
            (w, next(c.channels))
        })
        .collect();
    let f = shape.features;
    let flat = shape.flat_len().unwrap();
    let params = EncoderParams {
        convs,
        head_weight: next(f * flat),
        head_bias: next(f),
        norm_gain: vec![1.0; f],
        norm_shift: vec![0.0; f],
        shape: shape.clone(),
    };
    let encoder = ConvEncoder::new(params).unwrap();
    let mut policy = PixelNet::new(encoder, random_mlp(&[f + 22, 256, 256, 7], 3)).unwrap();
    let proprio = [0.2f32; 22];
    let mut action = [0.0f32; 7];
    let wrist: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let mut front: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 13 % 256) as u8).collect();
    let mut stacked = vec![0u8; shape.input_len()];
    let mut features = vec![0.0f32; f];
    let mut first = vec![0.0f32; f];
    let (allocations, _) = count_on_this_thread(|| {
        for t in 0..200usize {
            front[t * 31 % (64 * 64 * 3)] = (t % 256) as u8;
            stack_frames(&[&wrist, &front], &mut stacked).unwrap();
            policy.forward(&stacked, &proprio, &mut action).unwrap();
            features[..7].copy_from_slice(&action);
            if t == 0 {
                first.copy_from_slice(&features);
            }
        }
    });
    assert_eq!(allocations, 0, "{allocations} allocations in 200 frames");
    assert!(action.iter().all(|v| v.is_finite()));
    assert_ne!(first, features, "the actions follow the frames");
}

/// A whole runtime tick with a policy that sees pixels: images published into the image cells
/// at the policy rate (fresh, then not at all, so the stale-input hold runs, then fresh again),
/// the base's encoder and MLP and the residual's (its encoder's newer weights taken in place at
/// the first step after a publication), composition, filter and robot I/O. Publishing and
/// ticking allocate nothing.
#[test]
fn a_runtime_tick_with_a_pixel_policy_allocates_nothing() {
    use reflex_core::{image_cell, FLAT_OBJECTS};
    use reflex_policy::{
        ConvEncoder, EncoderShape, EncoderSlot, PixelNet, PixelPolicy, ResidualPolicy, WeightsSlot,
    };
    let arm = arm();
    let cfg = follower_config(&arm);
    let robot = FollowerArm::new(1.0 / cfg.servo_rate_hz);
    let shape = EncoderShape::small(32, 2);
    let f = shape.features;
    let flat = shape.flat_len().unwrap();
    let mut in_ch = shape.channels;
    let convs = shape
        .convs
        .iter()
        .map(|c| {
            let n = c.channels * in_ch * c.kernel * c.kernel;
            in_ch = c.channels;
            (
                (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.02).collect(),
                vec![0.01; c.channels],
            )
        })
        .collect();
    let params = reflex_policy::EncoderParams {
        convs,
        head_weight: (0..f * flat)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect(),
        head_bias: vec![0.0; f],
        norm_gain: vec![1.0; f],
        norm_shift: vec![0.0; f],
        shape: shape.clone(),
    };
    let encoder = ConvEncoder::new(params.clone()).unwrap();
    let net = PixelNet::new(
        encoder.clone(),
        random_mlp(&[f + FLAT_OBJECTS, 256, 256, 7], 4),
    )
    .unwrap();
    let (mut camera, frames) = image_cell(shape.input_len());
    let (mut camera2, frames2) = image_cell(shape.input_len());
    // Images older than two policy steps are stale.
    let policy = PixelPolicy::new(net, frames, 20_000_000).unwrap();
    let encoder_slot = EncoderSlot::new(encoder);
    let actor = WeightsSlot::new(random_mlp(&[f + FLAT_OBJECTS + 7, 64, 14], 5));
    let residual = ResidualPolicy::pixel_tanh_gaussian(
        actor.clone(),
        encoder_slot.clone(),
        frames2,
        FLAT_OBJECTS,
        7,
        Arc::new(AtomicBool::new(true)),
        3,
    )
    .unwrap();
    let mut rt = Runtime::new(
        robot,
        cfg,
        arm,
        Box::new(policy),
        Some(residual),
        EStop::new(),
    )
    .unwrap();
    let per_step = rt.ticks_per_step() as u64;
    let mut k = 0u8;
    let mut tick = |rt: &mut Runtime<FollowerArm>, t: u64, publish: bool| {
        if publish && t.is_multiple_of(per_step) {
            k = k.wrapping_add(1);
            let stamp = rt.observation().robot.stamp_ns;
            let fill = |b: &mut [u8]| {
                for (i, v) in b.iter_mut().enumerate() {
                    *v = (i as u8).wrapping_mul(k);
                }
            };
            camera.publish_with(stamp, fill);
            camera2.publish_with(stamp, fill);
        }
        rt.tick();
    };
    for t in 0..100 {
        tick(&mut rt, t, true);
    }
    // A learner's newer weights (published off this thread's count: that side allocates).
    let mut newer = params;
    newer.head_bias.iter_mut().for_each(|b| *b += 0.1);
    encoder_slot
        .publish(ConvEncoder::new(newer).unwrap())
        .unwrap();
    actor
        .publish(random_mlp(&[f + FLAT_OBJECTS + 7, 64, 14], 6))
        .unwrap();
    let (allocations, _) = count_on_this_thread(|| {
        for t in 0..3_000u64 {
            // Fresh images, then a camera that stops for a second, then fresh again.
            tick(&mut rt, t, !(1_000..2_000).contains(&t));
        }
    });
    assert_eq!(allocations, 0, "{allocations} allocations in 3,000 ticks");
    let s = rt.stats();
    let stale = s.stale_policy_inputs.load(Ordering::Relaxed);
    let steps = s.policy_steps.load(Ordering::Relaxed);
    assert!((90..=110).contains(&stale), "{stale} stale steps");
    assert!(steps >= 300, "{steps} policy steps");
    assert_eq!(s.non_finite_residuals.load(Ordering::Relaxed), 0);
}
