//! Demonstrations read from recorded teleop sessions (`demo_sessions`) instead of the
//! scripted expert's: what an operator shows a real arm, for a task with no scripted expert or
//! an arm without the object tracker the expert plans from.
//!
//! Every successful episode of the sessions becomes a demonstration: each policy step's
//! executed action (the operator's while they drove, the policy's otherwise) is the label, its
//! observation the input; a run from pixels also reads the step's camera frames (resampled to
//! the encoder's side the way a camera image reaches a policy, [`reflex_ros::camera::sample`],
//! and stacked in the order of `[pixels] cameras`) and takes the observation's
//! proprioception. The episode's last step ends it terminated, as a success.
//! Episodes that did not succeed are left out (and counted): cloning them would teach what the
//! operator ended as a failure. A step's reward is the one the session judged, or, where none
//! was judged (an arm whose judge needs what it does not have), 0 and `success_reward` at the
//! last step; under a reward source the learner stores the stage's `demo_reward` instead, as
//! for scripted demonstrations.
//!
//! A session of another task, recorded at another policy rate or without one of the cameras,
//! an episode without frames, and an observation or action of another width are refused,
//! naming the file.

use super::config::{stage, TrainError};
use super::pixels::Seen;
use crate::teleop::cameras::{stream_path, StreamReader};
use crate::teleop::record::{read_recording, EpisodeRecord, SessionHeader, HEADER, RECORDING};
use reflex_core::{ActionSpace, Outcome, Transition};
use reflex_sim::Task;
use std::path::{Path, PathBuf};

/// What was read from the sessions.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionDemoReport {
    /// The session directories, as given.
    pub sessions: Vec<String>,
    /// Episodes recorded in them.
    pub episodes: usize,
    /// Successful episodes: the demonstrations.
    pub used: usize,
    /// Policy steps in the demonstrations.
    pub steps: usize,
    /// Demonstration steps the operator drove.
    pub intervened_steps: usize,
    /// Successful episodes left out because their camera stream ended before their frames (a
    /// session that died before its encoder wrote them).
    #[serde(default)]
    pub without_frames: usize,
}

/// What the sessions must match: the run's task, observation and action widths, and for a run
/// from pixels its cameras and picture side (no cameras: frames are not read).
struct Want<'a> {
    pub task: &'a Task,
    pub obs_dim: usize,
    pub cameras: &'a [String],
    pub side: usize,
    pub success_reward: f64,
}

fn refused(path: PathBuf, message: impl std::fmt::Display) -> TrainError {
    stage("demonstrations")(format!("{}: {message}", path.display()))
}

/// Checks a session's header against what the run needs.
fn check_header(dir: &Path, h: &SessionHeader, want: &Want) -> Result<(), TrainError> {
    let hp = dir.join(HEADER);
    if h.task != want.task.name {
        return Err(refused(
            hp,
            format!(
                "task `{}`, but this run trains `{}`",
                h.task, want.task.name
            ),
        ));
    }
    let rate = want.task.control_rate_hz;
    if (h.policy_rate_hz - rate).abs() > 1e-6 * rate {
        return Err(refused(
            hp,
            format!(
                "recorded at {} policy steps a second, but the task steps at {rate}: its actions \
                 would mean other motions",
                h.policy_rate_hz
            ),
        ));
    }
    if let Some(c) = want.cameras.iter().find(|c| !h.cameras.contains(c)) {
        return Err(refused(
            hp,
            format!(
                "camera `{c}` of `[pixels] cameras` was not recorded (recorded: {:?}; record \
                 with frames, `reflex teleop --record DIR`)",
                h.cameras
            ),
        ));
    }
    Ok(())
}

/// Checks one episode's widths; its step count.
fn check_episode(
    dir: &Path,
    e: &EpisodeRecord,
    want: &Want,
    act_dim: usize,
) -> Result<usize, TrainError> {
    let rp = dir.join(RECORDING);
    let n = e.actions.len();
    let bad = |m: String| refused(rp.clone(), format!("episode {}: {m}", e.episode));
    if e.observations.len() != n || (!e.rewards.is_empty() && e.rewards.len() != n) {
        return Err(bad(format!(
            "{n} actions but {} observations and {} rewards",
            e.observations.len(),
            e.rewards.len()
        )));
    }
    if let Some((k, o)) = e
        .observations
        .iter()
        .enumerate()
        .find(|(_, o)| o.len() != want.obs_dim)
    {
        return Err(bad(format!(
            "step {k}: an observation of {} values, the arm's has {}",
            o.len(),
            want.obs_dim
        )));
    }
    if let Some((k, a)) = e
        .actions
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() != act_dim || a.iter().any(|v| !v.is_finite()))
    {
        return Err(bad(format!(
            "step {k}: action {a:?}: the task's actions have {act_dim} finite values"
        )));
    }
    match &e.frames {
        _ if want.cameras.is_empty() => Ok(n),
        Some(f) if f.at.len() == n => Ok(n),
        Some(f) => Err(bad(format!("{} frames for {n} steps", f.at.len()))),
        None => Err(bad("no camera frames (record with frames)".into())),
    }
}

/// The demonstrations of the run's `demo_sessions` for an arm whose flat observation has
/// `obs_dim` values; with their frames at `[pixels]`'s side and cameras for a run from
/// `pixels`.
pub(super) fn read_for_run(
    cfg: &super::TrainConfig,
    task: &Task,
    obs_dim: usize,
    pixels: bool,
) -> Result<(Vec<Seen>, SessionDemoReport), TrainError> {
    let want = Want {
        task,
        obs_dim,
        cameras: if pixels { &cfg.pixels.cameras } else { &[] },
        side: cfg.pixels.side,
        success_reward: cfg.reward.sparse.success_reward,
    };
    let (steps, report) = read_session_demos(&cfg.demo_sessions, &want)?;
    tracing::info!(
        episodes = report.episodes,
        used = report.used,
        steps = report.steps,
        "demonstrations read from recorded sessions (their successful episodes)"
    );
    Ok((steps, report))
}

/// Reads the demonstrations of `dirs` (see the module docs): each step with the executed
/// action as both its label and its action, the stacked picture its action was chosen on, and
/// at an episode's end the picture after it (not recorded: its own, never bootstrapped from).
fn read_session_demos(
    dirs: &[PathBuf],
    want: &Want,
) -> Result<(Vec<Seen>, SessionDemoReport), TrainError> {
    let space: ActionSpace = want.task.action_space;
    let act_dim = space.dim();
    let side = want.side;
    let mut report = SessionDemoReport {
        sessions: dirs.iter().map(|d| d.display().to_string()).collect(),
        ..Default::default()
    };
    if dirs.is_empty() {
        return Err(stage("demonstrations")(
            "demo_sessions: no session given".to_owned(),
        ));
    }
    let mut steps = Vec::new();
    let mut small: Vec<Vec<u8>> = want
        .cameras
        .iter()
        .map(|_| vec![0; side * side * 3])
        .collect();
    let mut rgb: Vec<Vec<u8>> = want.cameras.iter().map(|_| Vec::new()).collect();
    let mut episode_id = 0u64;
    for dir in dirs {
        let (h, episodes) =
            read_recording(dir).map_err(|m| stage("demonstrations")(m.to_string()))?;
        check_header(dir, &h, want)?;
        let [w, hgt] = h.frame_size;
        // One decoder per camera for the part being read; frames are read in order.
        let mut readers: Option<(u32, Vec<StreamReader>)> = None;
        // A part whose streams ended early.
        let mut ended: Option<u32> = None;
        for e in &episodes {
            report.episodes += 1;
            let n = check_episode(dir, e, want, act_dim)?;
            if !e.success || n == 0 {
                continue;
            }
            let refs = e.frames.as_ref().filter(|_| !want.cameras.is_empty());
            if refs.is_some_and(|r| ended == Some(r.part)) {
                report.without_frames += 1;
                continue;
            }
            if let Some(refs) = refs.filter(|r| readers.as_ref().is_none_or(|(p, _)| *p != r.part))
            {
                let mut rs = Vec::new();
                for c in want.cameras {
                    let path = stream_path(dir, refs.part, c);
                    rs.push(StreamReader::open(&path, w, hgt).map_err(|m| refused(path, m))?);
                }
                readers = Some((refs.part, rs));
            }
            let first = steps.len();
            let mut stream_ended = None;
            for k in 0..n {
                let mut image = Vec::new();
                if let (Some(refs), Some((_, rs))) = (refs, readers.as_mut()) {
                    for (ci, r) in rs.iter_mut().enumerate() {
                        if let Err(m) = r.seek_read(refs.at[k], &mut rgb[ci]) {
                            stream_ended = Some((refs.part, m));
                            break;
                        }
                        resample(&rgb[ci], (w, hgt), side, &mut small[ci]);
                    }
                    if stream_ended.is_some() {
                        break;
                    }
                    let views: Vec<&[u8]> = small.iter().map(|v| &v[..]).collect();
                    image = vec![0; side * side * 3 * views.len()];
                    reflex_policy::stack_frames(&views, &mut image).map_err(|e| {
                        stage("demonstrations")(format!("stacking the cameras' pictures: {e:?}"))
                    })?;
                }
                let end = k + 1 == n;
                let mut t = Transition::empty(space);
                t.episode = episode_id;
                t.step = k as u64;
                t.obs.extend_from(&e.observations[k]);
                t.next_obs
                    .extend_from(&e.observations[if end { k } else { k + 1 }]);
                t.action.copy_from(&e.actions[k]);
                t.base_action = t.action;
                t.intervened = e.intervened.get(k).copied().unwrap_or(false);
                let judged = e.rewards.get(k).copied().flatten();
                t.outcome = Outcome {
                    reward: judged.unwrap_or(if end { want.success_reward } else { 0.0 }),
                    success: end,
                    terminated: end,
                    ..Outcome::PENDING
                };
                // The picture after the last step was not recorded: the step is terminal, so
                // nothing is bootstrapped from it.
                let last = end.then(|| image.clone());
                steps.push(Seen { t, image, last });
            }
            if let Some((part, m)) = stream_ended {
                // Frames are written in order, so every later episode of the part lacks them
                // too: a session that died before its encoder wrote them. Its earlier
                // episodes are kept.
                tracing::warn!(
                    "{m}: episode {} and the later ones recorded in part {part} are left out",
                    e.episode
                );
                steps.truncate(first);
                ended = Some(part);
                report.without_frames += 1;
                continue;
            }
            report.used += 1;
            report.steps += steps.len() - first;
            report.intervened_steps += steps[first..].iter().filter(|s| s.t.intervened).count();
            episode_id += 1;
        }
    }
    if steps.is_empty() {
        return Err(stage("demonstrations")(format!(
            "demo_sessions: none of the {} recorded episodes in {:?} is a success with its \
             frames ({} successes had lost them): nothing to clone",
            report.episodes, report.sessions, report.without_frames
        )));
    }
    Ok((steps, report))
}

/// `rgb` (`w` x `h`) resampled to `side` x `side` into `out`.
fn resample(rgb: &[u8], (w, h): (usize, usize), side: usize, out: &mut [u8]) {
    for y in 0..side {
        for x in 0..side {
            let (u, v) = reflex_ros::camera::sample(x, y, (w, h), (side, side));
            let (o, i) = ((y * side + x) * 3, (v * w + u) * 3);
            out[o..o + 3].copy_from_slice(&rgb[i..i + 3]);
        }
    }
}
