//! Frames for the success classifier (`reflex classifier train` / `eval`): the scripted expert
//! in the simulator with several levels of action noise, each frame labelled by the task's own
//! success predicate. The classifier itself (`reflex-classifier`) never sees the simulator.

use reflex_classifier::classifier_stage::{episode_ends, EndStats};
use reflex_classifier::{image_tensor_layout, Accuracy, ClassifierError, FrameSet};
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
    collect_episode_frames(task, episodes, first_seed, size, after_success).map(|(set, _)| set)
}

/// [`collect_frames`], with the number of frames of each episode, in order.
pub fn collect_episode_frames(
    task: &Task,
    episodes: usize,
    first_seed: u64,
    size: usize,
    after_success: usize,
) -> Result<(FrameSet, Vec<usize>), ClassifierError> {
    if size < 16 || !size.is_multiple_of(8) {
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
    let mut lengths: Vec<usize> = Vec::with_capacity(episodes);
    noisy_expert_episodes(task, episodes, first_seed, &mut rng, |ep, env, step| {
        if ep != current {
            current = ep;
            since_success = None;
            lengths.push(0);
        }
        if let Some(n) = lengths.last_mut() {
            *n += 1;
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
    Ok((set, lengths))
}

/// Frames that run on after a success (the expert holding the result).
pub const AFTER_SUCCESS: usize = 8;

/// What `reflex classifier train` does.
#[derive(Clone, Debug)]
pub struct ClassifierTrainSpec {
    /// Task.
    pub task: Task,
    /// Episodes whose frames train the classifier.
    pub episodes: usize,
    /// Episodes whose frames only test it.
    pub heldout_episodes: usize,
    /// Image side, pixels (a multiple of 8).
    pub size: usize,
    /// Passes over the training frames.
    pub epochs: usize,
    /// Adam step size.
    pub lr: f64,
    /// Seed of episodes, weights and batches.
    pub seed: u64,
    /// Output directory (`classifier.safetensors`, `classifier.json`, `report.json`).
    pub out: std::path::PathBuf,
}

/// What training measured (`report.json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassifierTrainReport {
    /// Task.
    pub task: String,
    /// Image side, pixels.
    pub size: usize,
    /// Passes made.
    pub epochs: usize,
    /// Loss of the last epoch.
    pub final_loss: f32,
    /// Frames it was trained on.
    pub train_frames: usize,
    /// Of which positive.
    pub train_positives: usize,
    /// Accuracy on its training frames.
    pub train: reflex_classifier::Accuracy,
    /// Accuracy on the held-out episodes' frames.
    pub heldout: reflex_classifier::Accuracy,
    /// Wall-clock time, seconds.
    pub wall_s: f64,
}

/// Collects frames from the scripted expert, trains the classifier, measures it on held-out
/// episodes and saves it with `report.json` in `spec.out`. `epoch` is told each epoch's loss.
pub fn train_classifier(
    spec: &ClassifierTrainSpec,
    mut epoch: impl FnMut(usize, f32),
) -> Result<ClassifierTrainReport, ClassifierError> {
    if spec.episodes == 0 || spec.heldout_episodes == 0 {
        return Err(ClassifierError::Invalid(
            "episodes and heldout_episodes must be positive".into(),
        ));
    }
    let started = std::time::Instant::now();
    let seed0 = spec.seed.wrapping_mul(1_000_003);
    let frames = collect_frames(&spec.task, spec.episodes, seed0, spec.size, AFTER_SUCCESS)?;
    let heldout = collect_frames(
        &spec.task,
        spec.heldout_episodes,
        seed0 + spec.episodes as u64 + 11,
        spec.size,
        AFTER_SUCCESS,
    )?;
    tracing::info!(
        frames = frames.len(),
        positives = frames.positives(),
        heldout = heldout.len(),
        heldout_positives = heldout.positives(),
        "frames collected"
    );
    let cfg = reflex_classifier::ClassifierConfig {
        epochs: spec.epochs,
        lr: spec.lr,
        seed: spec.seed,
        ..Default::default()
    };
    let (clf, loss) = reflex_classifier::train(&frames, &spec.task.name, &cfg, &mut epoch)?;
    let report = ClassifierTrainReport {
        task: spec.task.name.clone(),
        size: spec.size,
        epochs: spec.epochs,
        final_loss: loss,
        train_frames: frames.len(),
        train_positives: frames.positives(),
        train: clf.evaluate(&frames)?,
        heldout: clf.evaluate(&heldout)?,
        wall_s: started.elapsed().as_secs_f64(),
    };
    clf.save(&spec.out)?;
    let path = spec.out.join("report.json");
    let text = serde_json::to_string_pretty(&report)
        .unwrap_or_else(|_| unreachable!("the report always serialises"));
    std::fs::write(&path, text).map_err(|e| ClassifierError::File {
        path,
        message: e.to_string(),
    })?;
    Ok(report)
}

/// What `reflex classifier eval` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassifierEval {
    /// Accuracy per frame.
    #[serde(flatten)]
    pub frames: Accuracy,
    /// The same episodes ended by the classifier as `[reward.classifier_stage] terminate`
    /// would end them, for each `end_after` in `windows`.
    pub ends: Vec<EndStats>,
}

/// The accuracy of the classifier in `model` on `episodes` fresh episodes of `task` (default:
/// the one it was trained on) from `seed`, and how it would end those episodes with each
/// `end_after` in `windows` (the scripted expert's episodes at five noise levels; a policy's
/// own episodes fail in other ways, so the training run's counters are the figure that
/// counts).
pub fn eval_classifier(
    model: &std::path::Path,
    task: Option<&str>,
    episodes: usize,
    seed: u64,
    windows: &[usize],
) -> Result<ClassifierEval, ClassifierError> {
    if episodes == 0 {
        return Err(ClassifierError::Invalid("episodes must be positive".into()));
    }
    if windows.contains(&0) {
        return Err(ClassifierError::Invalid(
            "end_after: every window must be at least 1".into(),
        ));
    }
    let clf = reflex_classifier::Classifier::load(model)?;
    let name = task.map_or_else(|| clf.meta.task.clone(), str::to_owned);
    let task = Task::load(&name).map_err(|e| ClassifierError::Sim(e.to_string()))?;
    let (frames, lengths) =
        collect_episode_frames(&task, episodes, seed, clf.meta.size, AFTER_SUCCESS)?;
    let probs = clf.probabilities(&frames.images)?;
    let ends = windows
        .iter()
        .map(|&w| episode_ends(&probs, &frames.labels, &lengths, clf.meta.threshold, w))
        .collect();
    Ok(ClassifierEval {
        frames: reflex_classifier::accuracy(&probs, &frames.labels, clf.meta.threshold),
        ends,
    })
}
