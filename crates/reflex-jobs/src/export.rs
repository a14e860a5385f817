//! `reflex export lerobot`: recorded teleop sessions as a LeRobot dataset (layout v3.0), so a
//! LeRobot user can train on Reflex's sessions.
//!
//! What is written under the output directory:
//! - `data/chunk-000/file-000.parquet`: one row per policy step of every exported episode:
//!   `observation.state` (the runtime's flat observation) and `action` (the executed action:
//!   the policy's, or the operator's while they drove) as fixed-size float32 lists,
//!   `next.reward`, `next.done`, `complementary_info.is_intervention`, `timestamp`,
//!   `frame_index`, `episode_index`, `index` and `task_index`;
//! - `videos/observation.images.<camera>/chunk-000/file-000.mp4`: every episode's frames of
//!   that camera back to back, AV1 (`libsvtav1`) in yuv420p, encoded by the system's `ffmpeg`
//!   from the session's lossless streams;
//! - `meta/info.json` (features, totals, fps, path templates), `meta/stats.json` (per feature
//!   min, max, mean, std, count; images per channel in [0, 1]), `meta/tasks.parquet` (the
//!   tasks' instructions as the index, as pandas writes it) and
//!   `meta/episodes/chunk-000/file-000.parquet` (per episode: length, rows, each video's time
//!   span, and where it came from in Reflex: session, episode id, scene seed, success, steps
//!   the operator drove).
//!
//! Episodes are exported as recorded: the ones re-record discarded and the ones an e-stop cut
//! short were never recorded. Sessions must agree on the observation and action sizes, the
//! policy rate and the cameras; the error names the session that does not.

use crate::run::RunError;
use crate::teleop::cameras::{stream_path, StreamReader};
use crate::teleop::record::{read_recording, EpisodeRecord, SessionHeader};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use reflex_sim::Task;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The dataset layout written.
pub const CODEBASE_VERSION: &str = "v3.0";
const DATA_FILE: &str = "data/chunk-000/file-000.parquet";
const EPISODES_FILE: &str = "meta/episodes/chunk-000/file-000.parquet";

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportSpec {
    /// Session directories (`reflex teleop --out`), in order.
    pub sessions: Vec<PathBuf>,
    /// The dataset's directory (must not exist, or be empty).
    pub out: PathBuf,
    /// `robot_type` in `info.json`.
    pub robot_type: String,
    /// Export only the episodes that ended in success.
    pub only_successes: bool,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportReport {
    /// Episodes written.
    pub episodes: u64,
    /// Rows (policy steps) written.
    pub frames: u64,
    /// Distinct tasks.
    pub tasks: u64,
    /// Frames per second (the sessions' policy rate).
    pub fps: u32,
    /// The cameras exported as videos (`observation.images.<camera>`).
    pub cameras: Vec<String>,
    /// Episodes left out (`only_successes`).
    pub skipped: u64,
    /// Bytes of the data table and of each video.
    pub data_bytes: u64,
    /// Bytes of the videos, all cameras.
    pub video_bytes: u64,
}

struct Session {
    dir: PathBuf,
    header: SessionHeader,
    task: String,
    episodes: Vec<EpisodeRecord>,
}

fn err(msg: impl Into<String>) -> RunError {
    RunError::Setting(msg.into())
}

/// Names of the flat observation's values for a task (the runtime's layout), or `None` when
/// the size does not match it.
fn state_names(task: Option<&Task>, dim: usize) -> Vec<String> {
    let mut n: Vec<String> = Vec::new();
    (0..7).for_each(|i| n.push(format!("joint{i}.pos")));
    (0..7).for_each(|i| n.push(format!("joint{i}.vel")));
    for c in ["x", "y", "z", "qx", "qy", "qz", "qw"] {
        n.push(format!("tcp.{c}"));
    }
    n.push("gripper.width".into());
    if let Some(t) = task {
        for o in 0..t.objects.len() {
            for c in ["x", "y", "z", "qx", "qy", "qz", "qw"] {
                n.push(format!("object{o}.{c}"));
            }
        }
        for k in 0..t.keypoints.len() {
            ["x", "y", "z"]
                .iter()
                .for_each(|c| n.push(format!("keypoint{k}.{c}")));
        }
        for g in 0..t.goals.len() {
            ["x", "y", "z"]
                .iter()
                .for_each(|c| n.push(format!("goal{g}.{c}")));
        }
    }
    if n.len() == dim {
        n
    } else {
        (0..dim).map(|i| format!("state{i}")).collect()
    }
}

fn action_names(dim: usize) -> Vec<String> {
    let names: &[&str] = match dim {
        7 => &["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
        8 => &["dq1", "dq2", "dq3", "dq4", "dq5", "dq6", "dq7", "gripper"],
        _ => &[],
    };
    if names.len() == dim {
        names.iter().map(|s| s.to_string()).collect()
    } else {
        (0..dim).map(|i| format!("action{i}")).collect()
    }
}

/// Running per-dimension statistics.
#[derive(Clone)]
struct Stats {
    min: Vec<f64>,
    max: Vec<f64>,
    sum: Vec<f64>,
    sq: Vec<f64>,
    count: u64,
}

impl Stats {
    fn new(dim: usize) -> Self {
        Self {
            min: vec![f64::INFINITY; dim],
            max: vec![f64::NEG_INFINITY; dim],
            sum: vec![0.0; dim],
            sq: vec![0.0; dim],
            count: 0,
        }
    }

    fn add(&mut self, v: &[f64]) {
        for (i, &x) in v.iter().enumerate() {
            self.min[i] = self.min[i].min(x);
            self.max[i] = self.max[i].max(x);
            self.sum[i] += x;
            self.sq[i] += x * x;
        }
        self.count += 1;
    }

    /// `shape`: how each statistic's list is nested (images: `[3, 1, 1]`).
    fn to_json(&self, image: bool) -> Value {
        let n = self.count.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std: Vec<f64> = self
            .sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
            .collect();
        let shape = |v: &[f64]| -> Value {
            if image {
                json!(v.iter().map(|x| json!([[x]])).collect::<Vec<_>>())
            } else {
                json!(v)
            }
        };
        let finite = |v: &[f64]| {
            v.iter()
                .map(|x| if x.is_finite() { *x } else { 0.0 })
                .collect::<Vec<_>>()
        };
        json!({
            "min": shape(&finite(&self.min)),
            "max": shape(&finite(&self.max)),
            "mean": shape(&mean),
            "std": shape(&std),
            "count": [self.count],
        })
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> RunError {
    err(format!("{}: {e}", path.display()))
}

fn fixed_list(values: Vec<f32>, dim: usize) -> Result<ArrayRef, RunError> {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values: ArrayRef = Arc::new(Float32Array::from(values));
    FixedSizeListArray::try_new(item, dim as i32, values, None)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| err(format!("arrow: {e}")))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<u64, RunError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| io(p, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| io(path, e))?;
    w.write(batch).map_err(|e| io(path, e))?;
    w.close().map_err(|e| io(path, e))?;
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

fn batch(
    fields: Vec<(Field, ArrayRef)>,
    metadata: HashMap<String, String>,
) -> Result<RecordBatch, RunError> {
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = fields.into_iter().unzip();
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    RecordBatch::try_new(schema, columns).map_err(|e| err(format!("arrow: {e}")))
}

fn list_field(name: &str, dim: usize) -> Field {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Field::new(name, DataType::FixedSizeList(item, dim as i32), false)
}

/// Reads and checks the sessions.
fn load_sessions(spec: &ExportSpec) -> Result<Vec<Session>, RunError> {
    let mut sessions = Vec::new();
    for dir in &spec.sessions {
        let (header, episodes) = read_recording(dir).map_err(err)?;
        let task = Task::load(&header.task)
            .map(|t| t.instruction)
            .unwrap_or_else(|_| header.task.clone());
        for e in &episodes {
            if e.observations.len() != e.actions.len() || e.rewards.len() != e.actions.len() {
                return Err(err(format!(
                    "{}: episode {} was recorded without its observations and rewards (a recording older than the export): it cannot be exported",
                    dir.join(crate::teleop::record::RECORDING).display(),
                    e.episode
                )));
            }
            if !header.cameras.is_empty() && e.frames.is_none() {
                return Err(err(format!(
                    "{}: episode {} has no camera frames though the session recorded cameras {:?}",
                    dir.join(crate::teleop::record::RECORDING).display(),
                    e.episode,
                    header.cameras
                )));
            }
        }
        sessions.push(Session {
            dir: dir.clone(),
            header,
            task,
            episodes,
        });
    }
    let Some(first) = sessions.first() else {
        return Err(err("no session to export"));
    };
    let dims = |s: &Session| {
        s.episodes
            .first()
            .map(|e| (e.observations[0].len(), e.actions[0].len()))
    };
    let want = sessions.iter().find_map(dims);
    for s in &sessions {
        let differs = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            err(format!(
                "{}: {what} {a:?}, but {} has {b:?}: sessions exported together must agree",
                s.dir.display(),
                first.dir.display()
            ))
        };
        if (s.header.policy_rate_hz - first.header.policy_rate_hz).abs() > 1e-9 {
            return Err(differs(
                "policy rate",
                &s.header.policy_rate_hz,
                &first.header.policy_rate_hz,
            ));
        }
        if s.header.cameras != first.header.cameras {
            return Err(differs("cameras", &s.header.cameras, &first.header.cameras));
        }
        if s.header.frame_size != first.header.frame_size {
            return Err(differs(
                "frame size",
                &s.header.frame_size,
                &first.header.frame_size,
            ));
        }
        for e in &s.episodes {
            let d = (e.observations[0].len(), e.actions[0].len());
            if want.is_some_and(|w| w != d) {
                return Err(differs(
                    &format!("episode {}: observation and action sizes", e.episode),
                    &d,
                    &want,
                ));
            }
        }
    }
    Ok(sessions)
}

/// Encodes one camera's frames of every exported episode into one AV1 file; per episode, its
/// first frame's index in it. Updates the camera's statistics.
fn encode_camera(
    sessions: &[(&Session, Vec<&EpisodeRecord>)],
    camera: &str,
    size: [usize; 2],
    fps: u32,
    path: &Path,
    stats: &mut Stats,
) -> Result<(), RunError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| io(p, e))?;
    }
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args(["-s", &format!("{}x{}", size[0], size[1])])
        .args(["-r", &fps.to_string(), "-i", "-"])
        .args(["-c:v", "libsvtav1", "-pix_fmt", "yuv420p", "-g", "2", "-crf", "30"])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err("ffmpeg was not found on PATH (Debian: apt-get install ffmpeg): the videos need it")
            } else {
                err(format!("ffmpeg: {e}"))
            }
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut rgb = Vec::new();
    let mut pixel = [0f64; 3];
    let mut write_result = Ok(());
    'sessions: for (s, episodes) in sessions {
        let mut reader: Option<(u32, StreamReader)> = None;
        for e in episodes {
            let frames = e.frames.as_ref().expect("checked when loaded");
            if reader.as_ref().is_none_or(|(p, _)| *p != frames.part) {
                let p = stream_path(&s.dir, frames.part, camera);
                reader = Some((
                    frames.part,
                    StreamReader::open(&p, size[0], size[1]).map_err(err)?,
                ));
            }
            let (_, r) = reader.as_mut().expect("opened");
            for &at in &frames.at {
                r.seek_read(at, &mut rgb).map_err(err)?;
                // Per-channel statistics over every pixel, in [0, 1].
                for px in rgb.chunks_exact(3) {
                    for c in 0..3 {
                        pixel[c] = f64::from(px[c]) / 255.0;
                    }
                    stats.add(&pixel);
                }
                if let Err(e) = stdin.write_all(&rgb) {
                    write_result = Err(e);
                    break 'sessions;
                }
            }
        }
    }
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| io(path, e))?;
    if !out.status.success() || write_result.is_err() {
        return Err(err(format!(
            "{}: ffmpeg (libsvtav1) failed: {} {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Writes the dataset. `progress(done, of)` counts cameras encoded.
pub fn export_lerobot(
    spec: &ExportSpec,
    mut progress: impl FnMut(&str),
) -> Result<ExportReport, RunError> {
    let sessions = load_sessions(spec)?;
    if spec.out.exists()
        && std::fs::read_dir(&spec.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(err(format!(
            "--out {}: exists and is not empty: choose a new directory",
            spec.out.display()
        )));
    }
    let header = &sessions[0].header;
    let rate = header.policy_rate_hz;
    if !(rate >= 1.0 && (rate - rate.round()).abs() < 1e-6) {
        return Err(err(format!(
            "{}: policy rate {rate} Hz: a LeRobot dataset's fps is a whole number",
            sessions[0]
                .dir
                .join(crate::teleop::record::HEADER)
                .display()
        )));
    }
    let fps = rate.round() as u32;
    let cameras = header.cameras.clone();
    let size = header.frame_size;

    // Which episodes, and the tasks.
    let mut report = ExportReport {
        fps,
        cameras: cameras.clone(),
        ..Default::default()
    };
    let mut tasks: Vec<String> = Vec::new();
    let chosen: Vec<(&Session, Vec<&EpisodeRecord>)> = sessions
        .iter()
        .map(|s| {
            let keep: Vec<&EpisodeRecord> = s
                .episodes
                .iter()
                .filter(|e| !spec.only_successes || e.success)
                .collect();
            report.skipped += (s.episodes.len() - keep.len()) as u64;
            if !tasks.contains(&s.task) {
                tasks.push(s.task.clone());
            }
            (s, keep)
        })
        .collect();
    let total: usize = chosen.iter().map(|(_, e)| e.len()).sum();
    if total == 0 {
        return Err(err("no episode to export (none recorded, or none matched)"));
    }
    let (obs_dim, act_dim) = chosen
        .iter()
        .flat_map(|(_, e)| e.first())
        .map(|e| (e.observations[0].len(), e.actions[0].len()))
        .next()
        .expect("an episode");
    let task_of = Task::load(&header.task).ok();

    // The frame table and the episode table.
    let mut state = Vec::new();
    let mut action = Vec::new();
    let (mut reward, mut done, mut intervention) = (Vec::new(), Vec::new(), Vec::new());
    let (mut timestamp, mut frame_index, mut episode_index, mut index, mut task_index) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut st_state = Stats::new(obs_dim);
    let mut st_action = Stats::new(act_dim);
    let mut st_reward = Stats::new(1);
    let mut st_done = Stats::new(1);
    let mut st_iv = Stats::new(1);
    let mut st_ts = Stats::new(1);
    let mut st_fi = Stats::new(1);
    let mut st_ei = Stats::new(1);
    let mut st_ix = Stats::new(1);
    let mut st_ti = Stats::new(1);
    let mut ep_rows: Vec<(usize, String, u64, u64, u64, &Session, &EpisodeRecord)> = Vec::new();
    let mut row = 0u64;
    let mut ep = 0u64;
    for (s, episodes) in &chosen {
        let ti = tasks.iter().position(|t| *t == s.task).expect("listed") as i64;
        for e in episodes {
            let n = e.actions.len();
            let from = row;
            for k in 0..n {
                let obs = &e.observations[k];
                state.extend_from_slice(obs);
                action.extend_from_slice(&e.actions[k]);
                st_state.add(&obs.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
                st_action.add(
                    &e.actions[k]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect::<Vec<_>>(),
                );
                let r = e.rewards[k].unwrap_or(0.0) as f32;
                reward.push(r);
                st_reward.add(&[f64::from(r)]);
                let d = k + 1 == n;
                done.push(d);
                st_done.add(&[f64::from(u8::from(d))]);
                intervention.push(e.intervened[k]);
                st_iv.add(&[f64::from(u8::from(e.intervened[k]))]);
                let t = k as f32 / fps as f32;
                timestamp.push(t);
                st_ts.add(&[f64::from(t)]);
                frame_index.push(k as i64);
                st_fi.add(&[k as f64]);
                episode_index.push(ep as i64);
                st_ei.add(&[ep as f64]);
                index.push(row as i64);
                st_ix.add(&[row as f64]);
                task_index.push(ti);
                st_ti.add(&[ti as f64]);
                row += 1;
            }
            ep_rows.push((ti as usize, s.task.clone(), n as u64, from, row, s, e));
            ep += 1;
        }
    }
    report.episodes = ep;
    report.frames = row;
    report.tasks = tasks.len() as u64;

    std::fs::create_dir_all(&spec.out).map_err(|e| io(&spec.out, e))?;
    let scalar = |name: &str, t: DataType| Field::new(name, t, false);
    let data = batch(
        vec![
            (
                list_field("observation.state", obs_dim),
                fixed_list(state, obs_dim)?,
            ),
            (list_field("action", act_dim), fixed_list(action, act_dim)?),
            (
                scalar("next.reward", DataType::Float32),
                Arc::new(Float32Array::from(reward)),
            ),
            (
                scalar("next.done", DataType::Boolean),
                Arc::new(BooleanArray::from(done)),
            ),
            (
                scalar("complementary_info.is_intervention", DataType::Boolean),
                Arc::new(BooleanArray::from(intervention)),
            ),
            (
                scalar("timestamp", DataType::Float32),
                Arc::new(Float32Array::from(timestamp)),
            ),
            (
                scalar("frame_index", DataType::Int64),
                Arc::new(Int64Array::from(frame_index)),
            ),
            (
                scalar("episode_index", DataType::Int64),
                Arc::new(Int64Array::from(episode_index)),
            ),
            (
                scalar("index", DataType::Int64),
                Arc::new(Int64Array::from(index)),
            ),
            (
                scalar("task_index", DataType::Int64),
                Arc::new(Int64Array::from(task_index)),
            ),
        ],
        HashMap::new(),
    )?;
    report.data_bytes = write_parquet(&spec.out.join(DATA_FILE), &data)?;
    progress("data table written");

    // The videos: one file per camera, episodes back to back.
    let mut image_stats = BTreeMap::new();
    for camera in &cameras {
        let key = format!("observation.images.{camera}");
        let path = spec
            .out
            .join(format!("videos/{key}/chunk-000/file-000.mp4"));
        let mut st = Stats::new(3);
        encode_camera(&chosen, camera, size, fps, &path, &mut st)?;
        report.video_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        image_stats.insert(key, st);
        progress(&format!("camera {camera} encoded"));
    }

    // The episode table.
    let mut cols: Vec<(Field, ArrayRef)> = Vec::new();
    let i64s = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let f64s = |v: Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let n_ep = ep_rows.len();
    cols.push((
        scalar("episode_index", DataType::Int64),
        i64s((0..n_ep as i64).collect()),
    ));
    let mut tl = ListBuilder::new(StringBuilder::new());
    for r in &ep_rows {
        tl.values().append_value(&r.1);
        tl.append(true);
    }
    let tl = tl.finish();
    cols.push((
        Field::new("tasks", tl.data_type().clone(), false),
        Arc::new(tl),
    ));
    cols.push((
        scalar("length", DataType::Int64),
        i64s(ep_rows.iter().map(|r| r.2 as i64).collect()),
    ));
    cols.push((
        scalar("data/chunk_index", DataType::Int64),
        i64s(vec![0; n_ep]),
    ));
    cols.push((
        scalar("data/file_index", DataType::Int64),
        i64s(vec![0; n_ep]),
    ));
    cols.push((
        scalar("dataset_from_index", DataType::Int64),
        i64s(ep_rows.iter().map(|r| r.3 as i64).collect()),
    ));
    cols.push((
        scalar("dataset_to_index", DataType::Int64),
        i64s(ep_rows.iter().map(|r| r.4 as i64).collect()),
    ));
    for camera in &cameras {
        let key = format!("observation.images.{camera}");
        cols.push((
            scalar(&format!("videos/{key}/chunk_index"), DataType::Int64),
            i64s(vec![0; n_ep]),
        ));
        cols.push((
            scalar(&format!("videos/{key}/file_index"), DataType::Int64),
            i64s(vec![0; n_ep]),
        ));
        // Frames back to back: an episode's span is its rows' span at the dataset's fps.
        cols.push((
            scalar(&format!("videos/{key}/from_timestamp"), DataType::Float64),
            f64s(
                ep_rows
                    .iter()
                    .map(|r| r.3 as f64 / f64::from(fps))
                    .collect(),
            ),
        ));
        cols.push((
            scalar(&format!("videos/{key}/to_timestamp"), DataType::Float64),
            f64s(
                ep_rows
                    .iter()
                    .map(|r| r.4 as f64 / f64::from(fps))
                    .collect(),
            ),
        ));
    }
    cols.push((
        scalar("meta/episodes/chunk_index", DataType::Int64),
        i64s(vec![0; n_ep]),
    ));
    cols.push((
        scalar("meta/episodes/file_index", DataType::Int64),
        i64s(vec![0; n_ep]),
    ));
    let sessions_col: Vec<String> = ep_rows
        .iter()
        .map(|r| r.5.dir.display().to_string())
        .collect();
    cols.push((
        scalar("reflex/session", DataType::Utf8),
        Arc::new(StringArray::from(sessions_col)),
    ));
    cols.push((
        scalar("reflex/episode", DataType::Int64),
        i64s(ep_rows.iter().map(|r| r.6.episode as i64).collect()),
    ));
    cols.push((
        scalar("reflex/seed", DataType::Int64),
        i64s(ep_rows.iter().map(|r| r.6.seed as i64).collect()),
    ));
    cols.push((
        scalar("reflex/success", DataType::Boolean),
        Arc::new(BooleanArray::from(
            ep_rows.iter().map(|r| r.6.success).collect::<Vec<_>>(),
        )),
    ));
    cols.push((
        scalar("reflex/intervened_steps", DataType::Int64),
        i64s(
            ep_rows
                .iter()
                .map(|r| r.6.intervened.iter().filter(|&&b| b).count() as i64)
                .collect(),
        ),
    ));
    write_parquet(&spec.out.join(EPISODES_FILE), &batch(cols, HashMap::new())?)?;

    // The tasks: pandas reads the `task` column back as the index.
    let pandas = json!({
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": null},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": null}
        ],
        "creator": {"library": "reflex", "version": env!("CARGO_PKG_VERSION")},
        "pandas_version": "2.2.3"
    });
    let tasks_batch = batch(
        vec![
            (
                scalar("task_index", DataType::Int64),
                i64s((0..tasks.len() as i64).collect()),
            ),
            (
                scalar("task", DataType::Utf8),
                Arc::new(StringArray::from(tasks.clone())),
            ),
        ],
        HashMap::from([("pandas".to_string(), pandas.to_string())]),
    )?;
    write_parquet(&spec.out.join("meta/tasks.parquet"), &tasks_batch)?;

    // info.json and stats.json.
    let vec_feature = |dim: usize, names: Vec<String>| json!({"dtype": "float32", "shape": [dim], "names": names});
    let one = |dtype: &str| json!({"dtype": dtype, "shape": [1], "names": null});
    let mut features = serde_json::Map::new();
    features.insert(
        "observation.state".into(),
        vec_feature(obs_dim, state_names(task_of.as_ref(), obs_dim)),
    );
    features.insert("action".into(), vec_feature(act_dim, action_names(act_dim)));
    for camera in &cameras {
        features.insert(
            format!("observation.images.{camera}"),
            json!({
                "dtype": "video",
                "shape": [size[1], size[0], 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": size[1],
                    "video.width": size[0],
                    "video.codec": "av1",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": false,
                    "video.fps": fps,
                    "video.channels": 3,
                    "has_audio": false
                }
            }),
        );
    }
    features.insert("next.reward".into(), one("float32"));
    features.insert("next.done".into(), one("bool"));
    features.insert("complementary_info.is_intervention".into(), one("bool"));
    features.insert("timestamp".into(), one("float32"));
    for k in ["frame_index", "episode_index", "index", "task_index"] {
        features.insert(k.into(), one("int64"));
    }
    let info = json!({
        "codebase_version": CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": report.episodes,
        "total_frames": report.frames,
        "total_tasks": report.tasks,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": format!("0:{}", report.episodes)},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": if cameras.is_empty() { Value::Null } else { json!("videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4") },
        "features": features,
    });
    let mut stats = serde_json::Map::new();
    stats.insert("observation.state".into(), st_state.to_json(false));
    stats.insert("action".into(), st_action.to_json(false));
    for (k, st) in &image_stats {
        stats.insert(k.clone(), st.to_json(true));
    }
    for (k, st) in [
        ("next.reward", &st_reward),
        ("next.done", &st_done),
        ("complementary_info.is_intervention", &st_iv),
        ("timestamp", &st_ts),
        ("frame_index", &st_fi),
        ("episode_index", &st_ei),
        ("index", &st_ix),
        ("task_index", &st_ti),
    ] {
        stats.insert(k.into(), st.to_json(false));
    }
    for (name, v) in [
        ("meta/info.json", info),
        ("meta/stats.json", Value::Object(stats)),
    ] {
        let p = spec.out.join(name);
        let text = serde_json::to_string_pretty(&v).map_err(|e| io(&p, e))?;
        std::fs::write(&p, text).map_err(|e| io(&p, e))?;
    }
    Ok(report)
}
