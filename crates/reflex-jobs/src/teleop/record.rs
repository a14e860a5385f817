//! Session recording and deterministic replay.
//!
//! Every session writes `recording.jsonl` in its directory: one line per finished episode with
//! its scene seed, every policy step's executed action (the policy's, or the operator's while
//! they drove), which steps the operator drove, how it ended, and a trajectory hash (SHA-256
//! over every step's index, executed action and resulting observation, as `f32` bits).
//! Each line also keeps every step's observation and reward, when the episode ended, and where
//! its camera frames are ([`super::cameras`]: one per step and camera, lossless). `header.json`
//! beside it says what ran (task, loop and policy rates, policies, the session's seed, the
//! cameras and their frame size, when it started).
//!
//! [`replay`] re-runs the recorded episodes in the simulator, in order, on a runtime built the
//! same way, feeding back the executed actions (so the operator's commands and the learning
//! policy's answers are both replayed as they happened), and checks each episode's hash. An
//! episode that followed an e-stop is replayed after the same abort and re-arm. A mismatch
//! means the simulator, the runtime's action pipeline or the safety filter behaves differently
//! from when the session ran.

use crate::run::{sim_runtime_with, RunError};
use reflex_core::{Action, Observation, Policy, Transition};
use reflex_runtime::EStop;
use reflex_sim::Task;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File names in a session's directory.
pub const RECORDING: &str = "recording.jsonl";
/// What ran.
pub const HEADER: &str = "header.json";

/// What a session ran, as its recording's header.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionHeader {
    /// The task's name (or file).
    pub task: String,
    /// The control loop's rate, Hz.
    pub servo_rate_hz: f64,
    /// Episode `i` was scene `seed + i`.
    pub seed: u64,
    /// The base policy (`scripted` or a file), the residual, whether it learned.
    pub policy: String,
    /// The residual policy file, if any (a learning session's is its live actor).
    pub residual: Option<String>,
    /// The session learned (its policy changed as it ran).
    pub learning: bool,
    /// The commit Reflex was built from.
    pub commit: String,
    /// The policy's rate, Hz (steps and camera frames per second).
    #[serde(default)]
    pub policy_rate_hz: f64,
    /// The cameras recorded (`cameras/part-NNN/<camera>.mkv`), in the order of a frame set;
    /// empty when frames were not recorded.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// The recorded frames' width and height, pixels.
    #[serde(default)]
    pub frame_size: [usize; 2],
    /// When the session (or this resumed part of it) started, ms since the Unix epoch.
    #[serde(default)]
    pub started_unix_ms: u64,
    /// The arm: `sim` (the built-in simulator; replayable) or `ros` (an arm through the ROS 2
    /// bridge).
    #[serde(default = "sim")]
    pub robot: String,
    /// Policy steps the arm held still after each success before its episode ended (0: the
    /// success ended it at once); a replay holds the same.
    #[serde(default)]
    pub success_hold_steps: u32,
}

fn sim() -> String {
    "sim".into()
}

/// One finished episode as recorded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeRecord {
    /// The episode's id.
    pub episode: u64,
    /// Its scene seed.
    pub seed: u64,
    /// Whether an e-stop aborted the episode before it (the loop was re-armed before it began).
    pub after_rearm: bool,
    /// Every policy step's executed action.
    pub actions: Vec<Vec<f32>>,
    /// Which steps the operator drove.
    pub intervened: Vec<bool>,
    /// The episode ended as a success (the task's, or the operator's label).
    pub success: bool,
    /// The trajectory hash (hex).
    pub hash: String,
    /// Every step's observation (the runtime's flat layout), as the policy saw it.
    #[serde(default)]
    pub observations: Vec<Vec<f32>>,
    /// Every step's reward (the task's; `None` (null) where none was judged).
    #[serde(default)]
    pub rewards: Vec<Option<f64>>,
    /// The episode's camera frames, one per step, when frames were recorded.
    #[serde(default)]
    pub frames: Option<super::cameras::FrameRef>,
    /// When the episode ended, ms since the Unix epoch (the drain thread's clock).
    #[serde(default)]
    pub ended_unix_ms: u64,
}

/// Cuts a recording's last line off when it has no line end (a session that died while
/// writing it), so that a resumed session's episodes start on a line of their own.
fn cut_torn_tail(path: &Path) -> std::io::Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(()); // none yet
    };
    if bytes.last().is_none_or(|b| *b == b'\n') {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(
        "{}: its last line was cut short (the episode in flight when the session ended): \
         dropped before appending",
        path.display()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(keep as u64)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Accumulates the hash of a trajectory, step by step.
#[derive(Clone, Default)]
pub struct TrajectoryHash(Sha256);

impl TrajectoryHash {
    /// Adds one step.
    pub fn add(&mut self, t: &Transition) {
        self.0.update(t.step.to_le_bytes());
        for v in t.action.as_slice().iter().chain(t.next_obs.as_slice()) {
            self.0.update(v.to_bits().to_le_bytes());
        }
    }

    /// The hash, as hex.
    pub fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Writes a session's recording as its episodes end (on the drain thread; each line is
/// flushed when written, so a crash loses at most the episode in flight).
pub struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    first_seed: u64,
    current: Option<(EpisodeRecord, TrajectoryHash)>,
    aborted_last: bool,
    cameras: Option<super::cameras::CameraRecorder>,
    /// Episodes written.
    pub written: u64,
}

impl Recorder {
    /// Opens (appending: a resumed session adds to it) `dir/recording.jsonl` and writes
    /// `dir/header.json`.
    pub fn open(dir: &Path, header: &SessionHeader) -> Result<Self, RunError> {
        let io = |p: &Path, e: std::io::Error| RunError::Setting(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let hp = dir.join(HEADER);
        let text = serde_json::to_string_pretty(header)
            .map_err(|e| RunError::Setting(format!("{}: {e}", hp.display())))?;
        std::fs::write(&hp, text).map_err(|e| io(&hp, e))?;
        let path = dir.join(RECORDING);
        cut_torn_tail(&path).map_err(|e| io(&path, e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
            path,
            first_seed: header.seed,
            current: None,
            aborted_last: false,
            cameras: None,
            written: 0,
        })
    }

    /// Records camera frames too (the header names the cameras).
    pub fn with_cameras(mut self, cameras: super::cameras::CameraRecorder) -> Self {
        self.cameras = Some(cameras);
        self
    }

    /// Takes one policy step's camera frames.
    pub fn frames(&mut self, set: &super::cameras::FrameSet) {
        if let Some(c) = &mut self.cameras {
            c.write(set);
        }
    }

    /// Closes the camera streams (waiting for `ffmpeg`); the number of frames per camera.
    pub fn finish(&mut self) -> Option<Result<u64, String>> {
        self.cameras.take().map(|c| c.finish())
    }

    /// Takes one transition of the session's loop.
    pub fn take(&mut self, t: &Transition) {
        if self
            .current
            .as_ref()
            .is_some_and(|(r, _)| r.episode != t.episode)
        {
            // The last episode never ended (an e-stop aborted it): not recorded.
            self.current = None;
            self.aborted_last = true;
        }
        let (rec, hash) = self.current.get_or_insert_with(|| {
            (
                EpisodeRecord {
                    episode: t.episode,
                    seed: self.first_seed + t.episode,
                    after_rearm: self.aborted_last,
                    actions: Vec::new(),
                    intervened: Vec::new(),
                    success: false,
                    hash: String::new(),
                    observations: Vec::new(),
                    rewards: Vec::new(),
                    frames: None,
                    ended_unix_ms: 0,
                },
                TrajectoryHash::default(),
            )
        });
        if t.interrupted != reflex_core::Interruption::None {
            // Cut short (the e-stop, a lost operator link): the episode is not replayable.
            self.current = None;
            self.aborted_last = t.interrupted == reflex_core::Interruption::EStop;
            return;
        }
        rec.actions.push(t.action.as_slice().to_vec());
        rec.intervened.push(t.intervened);
        rec.observations.push(t.obs.as_slice().to_vec());
        let r = t.outcome.reward;
        rec.rewards.push(r.is_finite().then_some(r));
        hash.add(t);
        if t.outcome.terminated || t.outcome.truncated {
            let (mut rec, hash) = self.current.take().expect("an episode in flight");
            rec.success = t.outcome.success;
            rec.hash = hash.hex();
            rec.ended_unix_ms = unix_ms();
            if let Some(c) = &mut self.cameras {
                rec.frames = c.claim(rec.episode, rec.actions.len());
            }
            self.aborted_last = false;
            let line = serde_json::to_string(&rec).unwrap_or_default();
            let ok = writeln!(self.file, "{line}").and_then(|_| self.file.flush());
            match ok {
                Ok(()) => self.written += 1,
                Err(e) => tracing::error!(
                    "{}: episode {} not recorded: {e}",
                    self.path.display(),
                    rec.episode
                ),
            }
        }
    }
}

/// Reads a recording; the error names the file and line. A last line cut short (no line end:
/// the session's process died while writing it) is the episode that was in flight: it is left
/// out with a warning, and every episode before it is read.
pub fn read_recording(dir: &Path) -> Result<(SessionHeader, Vec<EpisodeRecord>), String> {
    let hp = dir.join(HEADER);
    let text = std::fs::read_to_string(&hp).map_err(|e| format!("{}: {e}", hp.display()))?;
    let header: SessionHeader =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", hp.display()))?;
    let rp = dir.join(RECORDING);
    let text = std::fs::read_to_string(&rp).map_err(|e| format!("{}: {e}", rp.display()))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut episodes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: EpisodeRecord = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) if i + 1 == lines.len() && !line.ends_with('\n') => {
                tracing::warn!(
                    "{} line {}: cut short ({e}), the episode in flight when the session \
                     ended: left out",
                    rp.display(),
                    i + 1
                );
                continue;
            }
            Err(e) => return Err(format!("{} line {}: {e}", rp.display(), i + 1)),
        };
        let steps = rec.actions.len();
        let bad = |what: &str, n: usize| {
            format!(
                "{} line {}: {steps} actions but {n} {what}",
                rp.display(),
                i + 1
            )
        };
        if !rec.observations.is_empty() && rec.observations.len() != steps {
            return Err(bad("observations", rec.observations.len()));
        }
        if !rec.rewards.is_empty() && rec.rewards.len() != steps {
            return Err(bad("rewards", rec.rewards.len()));
        }
        if let Some(f) = rec.frames.as_ref().filter(|f| f.at.len() != steps) {
            return Err(bad("frames", f.at.len()));
        }
        if rec.actions.len() != rec.intervened.len() {
            return Err(format!(
                "{} line {}: {} actions but {} intervened flags",
                rp.display(),
                i + 1,
                rec.actions.len(),
                rec.intervened.len()
            ));
        }
        episodes.push(rec);
    }
    Ok((header, episodes))
}

/// A policy that plays back recorded actions.
struct Playback(Arc<Mutex<VecDeque<Vec<f32>>>>);

impl Policy for Playback {
    fn act(&mut self, _obs: &Observation, action: &mut Action) {
        let next = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        match next {
            Some(a) if action.copy_from(&a) => {}
            _ => action.as_mut_slice().fill(0.0),
        }
    }
}

/// What a replay found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Episodes in the recording.
    pub episodes: u64,
    /// Of them, replayed to the same trajectory hash.
    pub matched: u64,
    /// The ids of those that were not, with the step count replayed.
    pub mismatched: Vec<(u64, usize)>,
    /// Policy steps replayed.
    pub steps: u64,
}

/// Re-runs a session's recorded episodes in the simulator and checks their hashes.
pub fn replay(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<ReplayReport, RunError> {
    let (header, episodes) = read_recording(dir).map_err(RunError::Setting)?;
    if header.robot != "sim" {
        return Err(RunError::Setting(format!(
            "{}: recorded on a `{}` arm: only simulated sessions replay (a real arm's world \
             cannot be re-run); its recording and frames still export",
            dir.join(HEADER).display(),
            header.robot
        )));
    }
    let task = Task::load(&header.task).map_err(|e| {
        RunError::Setting(format!(
            "{}: task `{}`: {e}",
            dir.join(HEADER).display(),
            header.task
        ))
    })?;
    let queue: Arc<Mutex<VecDeque<Vec<f32>>>> = Arc::default();
    let estop = EStop::new();
    let first = episodes.first().map_or(header.seed, |e| e.seed);
    let mut rt = sim_runtime_with(
        &task,
        Box::new(Playback(queue.clone())),
        None,
        0.3,
        header.servo_rate_hz,
        first,
        estop.clone(),
    )?
    .runtime;
    rt.set_success_hold(header.success_hold_steps);
    let transitions = rt.transitions().clone();
    let mut report = ReplayReport {
        episodes: episodes.len() as u64,
        ..Default::default()
    };
    for (k, rec) in episodes.iter().enumerate() {
        if rec.after_rearm {
            // As in the session: the e-stop aborted an episode, the loop saw it latched, then
            // the re-arm, and the next episode began ramped in.
            estop.press();
            rt.tick();
            estop.release();
            estop
                .rearm()
                .map_err(|e| RunError::Control(format!("replay re-arm: {e}")))?;
        }
        while transitions.pop().is_some() {}
        rt.reset_episode(rec.seed)
            .map_err(|e| RunError::Control(e.to_string()))?;
        {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.clear();
            q.extend(rec.actions.iter().cloned());
        }
        let mut hash = TrajectoryHash::default();
        let mut got = 0usize;
        // Ticks enough for every recorded step, with room to spare.
        let per_step = (header.servo_rate_hz / task.control_rate_hz).round() as usize;
        let limit = (rec.actions.len() + 2) * per_step.max(1) + 10;
        for _ in 0..limit {
            let rep = rt.tick();
            while let Some(t) = transitions.pop() {
                if got < rec.actions.len() {
                    hash.add(&t);
                    got += 1;
                }
            }
            if got >= rec.actions.len() || rep.episode_done {
                break;
            }
        }
        report.steps += got as u64;
        if got == rec.actions.len() && hash.hex() == rec.hash {
            report.matched += 1;
        } else {
            report.mismatched.push((rec.episode, got));
        }
        progress(k as u64 + 1, report.episodes);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(id: u64) -> EpisodeRecord {
        EpisodeRecord {
            episode: id,
            seed: 100 + id,
            after_rearm: false,
            actions: vec![vec![0.1; 7]; 3],
            intervened: vec![false; 3],
            success: true,
            hash: "00".into(),
            observations: vec![vec![0.0; 4]; 3],
            rewards: vec![Some(1.0); 3],
            frames: None,
            ended_unix_ms: 0,
        }
    }

    /// A recording whose last line was cut short by a crash keeps every whole episode; a bad
    /// line anywhere else is refused, naming the file and the line.
    #[test]
    fn a_torn_last_line_is_left_out_and_a_bad_line_before_it_is_refused() {
        let dir = std::env::temp_dir().join(format!("reflex-rec-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let header = SessionHeader {
            task: "reach".into(),
            servo_rate_hz: 500.0,
            seed: 100,
            policy: "scripted".into(),
            residual: None,
            learning: false,
            commit: "test".into(),
            policy_rate_hz: 10.0,
            cameras: Vec::new(),
            frame_size: [0, 0],
            started_unix_ms: 0,
            robot: "sim".into(),
            success_hold_steps: 0,
        };
        drop(Recorder::open(&dir, &header).unwrap());
        let whole: String = (0..2)
            .map(|i| serde_json::to_string(&episode(i)).unwrap() + "\n")
            .collect();
        let third = serde_json::to_string(&episode(2)).unwrap();
        let torn = format!("{whole}{}", &third[..third.len() / 2]);
        std::fs::write(dir.join(RECORDING), &torn).unwrap();
        let (_, eps) = read_recording(&dir).unwrap();
        assert_eq!(eps.iter().map(|e| e.episode).collect::<Vec<_>>(), [0, 1]);
        // The same half line followed by a whole one is damage, not a crash's tail.
        std::fs::write(dir.join(RECORDING), format!("{torn}\n{third}\n")).unwrap();
        let err = read_recording(&dir).unwrap_err();
        assert!(err.contains(RECORDING) && err.contains("line 3"), "{err}");
        // A session resumed after the crash drops the torn line before appending, so its
        // episodes start on lines of their own.
        std::fs::write(dir.join(RECORDING), &torn).unwrap();
        drop(Recorder::open(&dir, &header).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join(RECORDING)).unwrap(), whole);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
