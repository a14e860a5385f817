//! The runtime drives the simulated arm through whole episodes with the scripted expert, through
//! the same `Robot` seam, action mapper and safety filter a real arm gets, and succeeds.

use reflex_core::{ArmModel, Policy};
use reflex_jobs::arms::{runtime_config, Arms, SimArms};
use reflex_runtime::{EStop, Runtime, RuntimeConfig};
use reflex_sim::{ScriptedExpert, SimRobot, Task, Termination};

fn runtime_for(task_name: &str, rate_hz: f64, seed: u64) -> Runtime<SimRobot> {
    let task = Task::load(task_name).unwrap();
    let arms = SimArms::new(task.clone(), rate_hz);
    let (robot, model): (SimRobot, ArmModel) = arms.make(seed).unwrap();
    let expert: Box<dyn Policy + Send> = Box::new(ScriptedExpert::new(&task, &model));
    let cfg = RuntimeConfig {
        transition_capacity: 1024,
        ..runtime_config(&task, &model, rate_hz, &Default::default())
    };
    Runtime::new(robot, cfg, model, expert, None, EStop::new()).unwrap()
}

/// Ticks until the episode ends; returns whether it succeeded and how many policy steps ran.
fn run_episode(rt: &mut Runtime<SimRobot>, max_ticks: u64) -> (bool, u64) {
    for _ in 0..max_ticks {
        let r = rt.tick();
        assert!(r.read_error.is_none(), "simulated reads never fail here");
        if r.episode_done {
            let o = r.outcome.expect("the last step was judged");
            return (o.success, rt.robot().last_step().unwrap().obs.step);
        }
    }
    panic!("episode did not end within {max_ticks} ticks");
}

#[test]
fn the_runtime_drives_the_simulated_arm_to_success_with_the_scripted_expert() {
    for (task, seed) in [("pick_cube", 11), ("reach", 12)] {
        let mut rt = runtime_for(task, 500.0, seed);
        let (success, steps) = run_episode(&mut rt, 500 * 60);
        let last = rt.robot().last_step().unwrap();
        assert!(
            success,
            "{task} seed {seed}: no success after {steps} steps ({:?})",
            last.info.termination
        );
        assert_eq!(last.info.termination, Some(Termination::Success));
        // Every step went out as a transition, the last one terminal.
        let q = rt.transitions();
        assert_eq!(q.stats().pushed, steps);
        let mut last_t = None;
        while let Some(t) = q.pop() {
            assert_eq!(t.next_obs.len(), t.obs.len());
            last_t = Some(t);
        }
        let t = last_t.unwrap();
        assert!(t.outcome.terminated && t.outcome.success);
        assert!(t.outcome.reward > 0.0);
    }
}

#[test]
fn a_1_khz_loop_over_2_ms_physics_also_succeeds_and_episodes_restart() {
    let mut rt = runtime_for("reach", 1000.0, 21);
    let (first, _) = run_episode(&mut rt, 1000 * 30);
    assert!(first);
    // After the end the arm comes to rest (decelerating within the acceleration limit) and
    // stays there until the next episode begins.
    for _ in 0..500 {
        let r = rt.tick();
        assert!(r.episode_done && !r.policy_step);
    }
    let held = *rt.last_command();
    for _ in 0..50 {
        rt.tick();
    }
    assert_eq!(*rt.last_command(), held);
    rt.reset_episode(22).unwrap();
    let (second, _) = run_episode(&mut rt, 1000 * 30);
    assert!(second);
    assert_eq!(
        rt.stats()
            .episodes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
