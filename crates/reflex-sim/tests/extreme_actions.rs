//! Random and extreme actions never panic the simulator, never produce a non-finite
//! observation, and never drive a joint outside its URDF limits.

use proptest::prelude::*;
use reflex_core::{Action, ActionSpace};
use reflex_sim::{Env, Task, Termination};

fn component() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1.0f32..1.0,
        1 => Just(1.0f32),
        1 => Just(-1.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(1e30f32),
        1 => Just(-1e30f32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn extreme_actions_keep_the_state_finite_and_inside_the_limits(
        task_ix in 0usize..3,
        joint_space in any::<bool>(),
        seed in 0u64..1000,
        actions in prop::collection::vec(prop::array::uniform8(component()), 12),
    ) {
        let name = ["reach", "pick_cube", "push"][task_ix];
        let mut task = Task::load(name).unwrap();
        if joint_space {
            task.action_space = ActionSpace::JointDelta;
        }
        let mut env = Env::new(task.clone()).unwrap();
        env.reset(seed).unwrap();
        let limits = env.model().limits;
        let mut a = Action::zeros(task.action_space);
        for raw in &actions {
            a.as_mut_slice().copy_from_slice(&raw[..task.action_space.dim()]);
            let bad = a.as_slice().iter().filter(|v| !v.is_finite()).count();
            let s = env.step(&a).unwrap();
            prop_assert_eq!(s.info.non_finite_action, bad);
            prop_assert!(s.obs.flat.as_slice().iter().all(|v| v.is_finite()));
            prop_assert!(s.reward.is_finite());
            prop_assert_ne!(s.info.termination, Some(Termination::NonFinite));
            for (i, q) in s.obs.robot.joint_pos_rad.iter().enumerate() {
                // Joint limits hold up to the compliance of the impedance controller.
                prop_assert!(*q >= limits[i].lower - 0.05 && *q <= limits[i].upper + 0.05,
                    "joint {} at {} outside [{}, {}]", i, q, limits[i].lower, limits[i].upper);
            }
            let w = s.obs.robot.gripper_width_m;
            prop_assert!((-1e-3..=0.081).contains(&w), "gripper width {}", w);
            if s.terminated || s.truncated {
                break;
            }
        }
    }
}
