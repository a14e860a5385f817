//! Frames for the success classifier (`reflex classifier train` / `eval`): the scripted expert
//! in the simulator with several levels of action noise, each frame labelled by the task's own
//! success predicate. The classifier itself (`reflex-classifier`) never sees the simulator.

use reflex_classifier::{image_tensor_layout, ClassifierError, FrameSet};
use reflex_core::{Frame, Rng};
use reflex_sim::{noisy_expert_episodes, Camera, Task};

/// Runs the scripted expert for `episodes` episodes from seed `first_seed` with a different
/// amount of action noise in each (from none to a level that rarely finishes), renders the
/// front camera at `size x size` after every step and labels each frame with the task's
/// success predicate. An episode runs on for up to `after_success` steps once it succeeds (the
/// expert holds the result), so each success gives several positives.
pub fn collect_frames(
    task: &Task,
    episodes: usize,
    first_seed: u64,
    size: usize,
    after_success: usize,
) -> Result<FrameSet, ClassifierError> {
    if size < 16 || size % 8 != 0 {
        return Err(ClassifierError::Invalid(format!(
            "size: must be a multiple of 8, at least 16, got {size}"
        )));
    }
    let camera = Camera::front(size, size);
    let mut frame = Frame::new(size, size);
    let mut rng = Rng::new(first_seed ^ 0xC1A5);
    let mut set = FrameSet {
        size,
        ..Default::default()
    };
    let mut since_success: Option<usize> = None;
    let mut current = usize::MAX;
    noisy_expert_episodes(task, episodes, first_seed, &mut rng, |ep, env, step| {
        if ep != current {
            current = ep;
            since_success = None;
        }
        env.render(&camera, &mut frame, false);
        image_tensor_layout(&frame, &mut set.images);
        set.labels.push(step.info.success);
        if step.info.success {
            since_success = Some(since_success.map_or(0, |k| k + 1));
        }
        let held_long_enough = since_success.is_some_and(|k| k >= after_success);
        let over = step.truncated
            || (step.terminated && !step.info.success)
            || (step.terminated && since_success.is_none());
        let lost_it = !step.info.success && since_success.is_some();
        Ok(!(held_long_enough || over || lost_it))
    })
    .map_err(ClassifierError::Sim)?;
    Ok(set)
}
