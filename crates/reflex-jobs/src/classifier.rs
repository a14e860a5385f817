//! Frames for the success classifier (`reflex classifier train` / `eval`), from one of two
//! sources:
//! - the scripted expert in the simulator with several levels of action noise, each frame
//!   labelled by the task's own success predicate ([`collect_frames`]);
//! - recorded sessions (`reflex teleop --record DIR`, on the simulator or a real arm over ROS 2),
//!   labelled by how each episode ended (the task's success, or the operator's label): the last
//!   `positive_last` frames of a successful episode are positives (by default the session's
//!   success hold plus one: the frames of the finished scene), every other frame a negative
//!   ([`session_frames`]). This is the path a real arm has: no simulator labels its
//!   frames.
//!
//! The classifier itself (`reflex-classifier`) never sees the simulator.

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

/// Frames of recorded sessions, labelled by their episodes' ends ([`session_frames`]).
pub struct SessionFrames {
    /// The task the sessions ran.
    pub task: String,
    /// Frames of the training episodes.
    pub train: FrameSet,
    /// Frames of the held-out episodes (every fifth episode, in recording order).
    pub heldout: FrameSet,
    /// Frames per held-out episode, in order.
    pub heldout_lengths: Vec<usize>,
    /// Episodes read, and of those, successful.
    pub episodes: (usize, usize),
}

/// Reads the frames of `camera` from recorded sessions `dirs` (all of one task, with that
/// camera recorded) at `size` x `size` (each recorded frame resampled as camera images are
/// for a policy). The last `positive_last` frames of a successful episode are labelled
/// success, every other frame not (`None`: each session's `success_hold_steps + 1`, the frames
/// its arm held the finished scene for); every fifth episode (in recording order, across the
/// sessions) is held out. Refuses, naming the file, a session without frames, without that
/// camera or of another task.
pub fn session_frames(
    dirs: &[std::path::PathBuf],
    camera: &str,
    size: usize,
    positive_last: Option<usize>,
) -> Result<SessionFrames, ClassifierError> {
    use crate::teleop::cameras::{stream_path, StreamReader};
    use crate::teleop::record::{read_recording, HEADER, RECORDING};
    if size < 16 || !size.is_multiple_of(8) {
        return Err(ClassifierError::Invalid(format!(
            "size: must be a multiple of 8, at least 16, got {size}"
        )));
    }
    if positive_last == Some(0) {
        return Err(ClassifierError::Invalid(
            "positive_last: at least the last frame of a successful episode is a success".into(),
        ));
    }
    if dirs.is_empty() {
        return Err(ClassifierError::Invalid("no session to read".into()));
    }
    let invalid =
        |path: std::path::PathBuf, message: String| ClassifierError::File { path, message };
    let mut out = SessionFrames {
        task: String::new(),
        train: FrameSet {
            size,
            ..Default::default()
        },
        heldout: FrameSet {
            size,
            ..Default::default()
        },
        heldout_lengths: Vec::new(),
        episodes: (0, 0),
    };
    let mut rgb = Vec::new();
    let mut frame = Frame::new(size, size);
    for dir in dirs {
        let (header, episodes) =
            read_recording(dir).map_err(|m| invalid(dir.join(RECORDING), m))?;
        if out.task.is_empty() {
            out.task = header.task.clone();
        } else if header.task != out.task {
            return Err(invalid(
                dir.join(HEADER),
                format!(
                    "task `{}`, but the first session ran `{}`: one classifier is for one task",
                    header.task, out.task
                ),
            ));
        }
        if !header.cameras.iter().any(|c| c == camera) {
            return Err(invalid(
                dir.join(HEADER),
                format!(
                    "camera `{camera}` was not recorded (recorded: {:?}; record with frames, and \
                     pick one with --camera)",
                    header.cameras
                ),
            ));
        }
        let [w, h] = header.frame_size;
        let positive_last = positive_last.unwrap_or(header.success_hold_steps as usize + 1);
        let mut reader: Option<(u32, StreamReader)> = None;
        for e in &episodes {
            let Some(refs) = e.frames.as_ref() else {
                return Err(invalid(
                    dir.join(RECORDING),
                    format!("episode {}: no camera frames", e.episode),
                ));
            };
            if reader.as_ref().is_none_or(|(p, _)| *p != refs.part) {
                let path = stream_path(dir, refs.part, camera);
                let r = StreamReader::open(&path, w, h).map_err(|m| invalid(path, m))?;
                reader = Some((refs.part, r));
            }
            let (_, r) = reader.as_mut().expect("opened");
            let held_out = out.episodes.0 % 5 == 4;
            out.episodes.0 += 1;
            out.episodes.1 += usize::from(e.success);
            let set = if held_out {
                out.heldout_lengths.push(refs.at.len());
                &mut out.heldout
            } else {
                &mut out.train
            };
            let n = refs.at.len();
            for (k, &at) in refs.at.iter().enumerate() {
                r.seek_read(at, &mut rgb)
                    .map_err(|m| invalid(stream_path(dir, refs.part, camera), m))?;
                for y in 0..size {
                    for x in 0..size {
                        let (u, v) = reflex_ros::camera::sample(x, y, (w, h), (size, size));
                        let (o, i) = ((y * size + x) * 3, (v * w + u) * 3);
                        frame.rgb[o..o + 3].copy_from_slice(&rgb[i..i + 3]);
                    }
                }
                image_tensor_layout(&frame, &mut set.images);
                set.labels.push(e.success && k + positive_last >= n);
            }
        }
    }
    Ok(out)
}

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
    /// Recorded sessions to learn from instead of the simulator (empty: the simulator). Their
    /// task must be `task`; `episodes` and `heldout_episodes` are then unused.
    pub sessions: Vec<std::path::PathBuf>,
    /// With `sessions`: the recorded camera to learn from.
    pub camera: String,
    /// With `sessions`: frames at the end of a successful episode labelled success (`None`:
    /// each session's success hold plus one).
    pub positive_last: Option<usize>,
    /// Where the network trains (`--device`).
    pub device: reflex_learn::burn_device::BurnDevice,
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
    /// Where the frames came from: `simulator`, or the sessions' directories.
    pub source: Vec<String>,
    /// With sessions: episodes read, and of those, successful.
    pub session_episodes: Option<(usize, usize)>,
    /// Where it trained.
    pub device: reflex_learn::burn_device::BurnDevice,
    /// Wall-clock time, seconds.
    pub wall_s: f64,
}

/// Collects frames from the scripted expert, trains the classifier, measures it on held-out
/// episodes and saves it with `report.json` in `spec.out`. `epoch` is told each epoch's loss.
pub fn train_classifier(
    spec: &ClassifierTrainSpec,
    mut epoch: impl FnMut(usize, f32),
) -> Result<ClassifierTrainReport, ClassifierError> {
    let started = std::time::Instant::now();
    let (frames, heldout, source, session_episodes) = if spec.sessions.is_empty() {
        if spec.episodes == 0 || spec.heldout_episodes == 0 {
            return Err(ClassifierError::Invalid(
                "episodes and heldout_episodes must be positive".into(),
            ));
        }
        let seed0 = spec.seed.wrapping_mul(1_000_003);
        let frames = collect_frames(&spec.task, spec.episodes, seed0, spec.size, AFTER_SUCCESS)?;
        let heldout = collect_frames(
            &spec.task,
            spec.heldout_episodes,
            seed0 + spec.episodes as u64 + 11,
            spec.size,
            AFTER_SUCCESS,
        )?;
        (frames, heldout, vec!["simulator".to_owned()], None)
    } else {
        let s = session_frames(&spec.sessions, &spec.camera, spec.size, spec.positive_last)?;
        if s.task != spec.task.name {
            return Err(ClassifierError::Invalid(format!(
                "the sessions ran task `{}`, not `{}` (pass --task {})",
                s.task, spec.task.name, s.task
            )));
        }
        if s.heldout.is_empty() {
            return Err(ClassifierError::Invalid(format!(
                "{} recorded episodes: at least 5 are needed (every fifth is held out)",
                s.episodes.0
            )));
        }
        let dirs = spec
            .sessions
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        (s.train, s.heldout, dirs, Some(s.episodes))
    };
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
        device: spec.device,
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
        source,
        session_episodes,
        device: spec.device,
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
