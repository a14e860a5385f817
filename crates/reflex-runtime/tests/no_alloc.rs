//! 10,000 ticks of base and residual MLPs, composition with an intervention active, and the
//! safety filter allocate nothing: a counting global allocator proves it.

mod common;

use common::{arm, home_state, limits, DT_S, HOME};
use reflex_core::{Action, ActionSpace, JointCommand};
use reflex_runtime::{Activation, Composer, EStop, Mlp, SafetyFilter};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
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

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut intervened = 0;
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
        let with_human = (t % 1000 < 300).then_some(&human);
        if composer.compose(&base, &residual, with_human, &mut action) {
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
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
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
