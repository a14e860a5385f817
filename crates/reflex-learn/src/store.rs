//! Crash-safe persistence: the replay log and checkpoints.
//!
//! **Replay log.** Every step the learner receives is appended to segment files
//! `replay/<n>.seg` (16-byte header: `RFXSTEP2`, observation and action widths). The framing
//! and recovery are [`SegmentLog`]'s, which `crate::pixel_replay::PixelLog` shares with its
//! own magic, widths and payload. A record is
//! `u32 length, u32 CRC-32 of the payload, payload` (flags, reward, episode id, step id,
//! observation, executed action, next observation). Appends are buffered and synced to disk at
//! least once a second ([`SYNC_INTERVAL`], by [`ReplayLog::sync_if_due`]) and at every
//! checkpoint; a new segment is synced with its directory as soon as it exists.
//!
//! Reopening reads every segment. A damaged record (a failed checksum, a length that is not the
//! segment's) costs that record only: reading resumes at the next position where an intact
//! record starts, and what was skipped is reported. At the end of the last segment, bytes that
//! hold no intact record are a torn tail from a crash mid-write: they are cut off with a warning
//! and appending continues after the last complete record. Segments written by an older format
//! are refused with the file named, never rewritten.
//!
//! **Checkpoints.** `ckpt-<updates>.bin`: `RFXCKPT1`, `u64` payload length, CRC-32, then a
//! safetensors payload (every tensor by name, JSON metadata under `meta`). Written to a
//! temporary file, synced, renamed into place and the directory synced, so a crash leaves
//! either the old or the new file. The two newest are kept; loading one that is damaged fails
//! with the file and the reason, and [`load_latest`] falls back to the previous one.

pub use crate::replay::Source;
use crate::replay::Step;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const SEG_MAGIC: &[u8; 8] = b"RFXSTEP2";
/// The previous format (no episode and step ids; actions stored as clipped residuals).
const SEG_MAGIC_V1: &[u8; 8] = b"RFXSTEP1";
/// The replay log is synced at least this often while steps arrive.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes before the vectors in a record's payload: flags (4), reward (4), episode (8), step (8).
pub const PAYLOAD_HEAD: usize = 24;
const CKPT_MAGIC: &[u8; 8] = b"RFXCKPT1";
/// A new segment starts when the current one passes this size.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Errors of the replay log and checkpoints; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
    /// The file is not what it should be.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// What reopening a replay log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete records read.
    pub records: u64,
    /// Segments read.
    pub segments: usize,
    /// Bytes of torn tail cut from the last segment.
    pub torn_bytes: u64,
    /// Bytes of damaged records skipped inside segments (each costs only itself).
    pub skipped_bytes: u64,
    /// Places where damaged bytes were skipped.
    pub damaged_records: u64,
}

/// Steps read back from a log, in order.
pub type Recovered = Vec<Step>;

/// How the records of one kind of log are framed: the segments' magic, the widths their
/// header holds (named, for the message when a run's differ), and every record's payload
/// length.
#[derive(Clone, Debug)]
pub struct LogFormat {
    /// The first 8 bytes of every segment.
    pub magic: [u8; 8],
    /// An older format's magic and why it cannot be read: refused naming the file.
    pub older: Option<([u8; 8], &'static str)>,
    /// The widths in the header, with their names.
    pub widths: Vec<(&'static str, u32)>,
    /// Bytes of every record's payload.
    pub payload_len: usize,
}

impl LogFormat {
    fn header_len(&self) -> usize {
        8 + 4 * self.widths.len()
    }
}

/// An append-only log of fixed-length records in segment files `<n>.seg`, each record
/// `u32 length, u32 CRC-32, payload` (see the module docs for its recovery).
pub struct SegmentLog {
    dir: PathBuf,
    format: LogFormat,
    segment: usize,
    writer: BufWriter<File>,
    written: u64,
    path: PathBuf,
    last_sync: std::time::Instant,
    /// Records appended since opening (plus those recovered).
    pub records: u64,
    /// Records known to be on disk (synced, or recovered from it).
    pub synced_records: u64,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`; every complete record's payload found goes to
    /// `record`, in order.
    pub fn open(
        dir: &Path,
        format: LogFormat,
        record: &mut dyn FnMut(&[u8]),
    ) -> Result<(Self, Recovery), StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segs: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let n = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<usize>()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        segs.sort();
        let mut rec = Recovery::default();
        let last = segs.len().saturating_sub(1);
        let mut last_good = 0u64;
        let header = format.header_len();
        let payload_len = format.payload_len;
        for (k, (_, path)) in segs.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(io_err(path))?;
            rec.segments += 1;
            if let Some((older, why)) = &format.older {
                if bytes.len() >= 8 && &bytes[..8] == older {
                    return Err(corrupt(path, *why));
                }
            }
            if bytes.len() < header || bytes[..8] != format.magic {
                let torn_header =
                    bytes.len() < header && format.magic.starts_with(&bytes[..bytes.len().min(8)]);
                if k == last && torn_header {
                    // A segment torn while its header was written: nothing in it.
                    rec.torn_bytes += bytes.len() as u64;
                    last_good = 0;
                    continue;
                }
                return Err(corrupt(path, "not a replay segment (bad header)"));
            }
            let widths: Vec<u32> = (0..format.widths.len())
                .map(|i| u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().expect("4")))
                .collect();
            if widths.iter().zip(&format.widths).any(|(a, (_, b))| a != b) {
                let list = |v: &mut dyn Iterator<Item = (&str, u32)>| {
                    v.map(|(n, w)| format!("{n} of {w}"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                };
                let names = format.widths.iter().map(|(n, _)| *n);
                let found = list(&mut names.clone().zip(widths.iter().copied()));
                let wanted = format
                    .widths
                    .iter()
                    .map(|(_, w)| w.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ");
                return Err(corrupt(
                    path,
                    format!("segment holds {found}, this run uses {wanted}"),
                ));
            }
            let mut at = header;
            // End of the last intact record.
            let mut end = header;
            while at < bytes.len() {
                if let Some(payload) = read_record(&bytes[at..], payload_len) {
                    record(payload);
                    at += 8 + payload_len;
                    end = at;
                    rec.records += 1;
                    continue;
                }
                // Damaged or torn: resume at the next intact record, if there is one.
                match next_intact(&bytes, at + 1, payload_len) {
                    Some(next) => {
                        tracing::error!(
                            file = %path.display(),
                            offset = at,
                            bytes = next - at,
                            "replay: a damaged record was skipped; the records after it are kept"
                        );
                        rec.skipped_bytes += (next - at) as u64;
                        rec.damaged_records += 1;
                        at = next;
                    }
                    None => break,
                }
            }
            let rest = (bytes.len() - end) as u64;
            if rest > 0 {
                if k == last {
                    tracing::warn!(
                        file = %path.display(),
                        offset = end,
                        bytes = rest,
                        "replay: dropping a torn tail (a write was interrupted); every complete record before it is kept"
                    );
                    rec.torn_bytes += rest;
                } else {
                    tracing::error!(
                        file = %path.display(),
                        offset = end,
                        bytes = rest,
                        "replay: damaged bytes at the end of a segment were skipped"
                    );
                    rec.skipped_bytes += rest;
                    rec.damaged_records += 1;
                }
            }
            last_good = end as u64;
        }
        let (segment, path, written) = match segs.last() {
            Some((n, p)) if last_good > 0 && last_good < SEGMENT_BYTES => {
                if recovered_len(p)? != last_good {
                    let f = OpenOptions::new().write(true).open(p).map_err(io_err(p))?;
                    f.set_len(last_good).map_err(io_err(p))?;
                    f.sync_all().map_err(io_err(p))?;
                }
                (*n, p.clone(), last_good)
            }
            Some((n, _)) => {
                let n = n + 1;
                (n, dir.join(format!("{n:06}.seg")), 0)
            }
            None => (0, dir.join("000000.seg"), 0),
        };
        let mut log = Self {
            dir: dir.to_owned(),
            format,
            segment,
            writer: append_to(&path)?,
            written,
            path,
            last_sync: std::time::Instant::now(),
            records: rec.records,
            synced_records: rec.records,
        };
        if log.written == 0 {
            log.start_segment()?;
        }
        Ok((log, rec))
    }

    /// Writes the header of a new segment and makes the file and its directory entry durable.
    fn start_segment(&mut self) -> Result<(), StoreError> {
        let mut h = Vec::with_capacity(self.format.header_len());
        h.extend_from_slice(&self.format.magic);
        for (_, w) in &self.format.widths {
            h.extend_from_slice(&w.to_le_bytes());
        }
        self.writer.write_all(&h).map_err(io_err(&self.path))?;
        self.written = h.len() as u64;
        self.writer.flush().map_err(io_err(&self.path))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(io_err(&self.path))?;
        sync_dir(&self.dir)
    }

    /// Appends one record's payload (buffered; [`SegmentLog::sync`] makes it durable).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        assert_eq!(
            payload.len(),
            self.format.payload_len,
            "record payload length"
        );
        if self.written >= SEGMENT_BYTES {
            self.sync()?;
            self.segment += 1;
            self.path = self.dir.join(format!("{:06}.seg", self.segment));
            self.writer = append_to(&self.path)?;
            self.start_segment()?;
        }
        let head = [
            (payload.len() as u32).to_le_bytes(),
            crc32fast::hash(payload).to_le_bytes(),
        ];
        for part in [&head[0][..], &head[1][..], payload] {
            self.writer.write_all(part).map_err(io_err(&self.path))?;
        }
        self.written += (8 + payload.len()) as u64;
        self.records += 1;
        Ok(())
    }

    /// Flushes buffered records and syncs them to disk.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.writer.flush().map_err(io_err(&self.path))?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(io_err(&self.path))?;
        self.synced_records = self.records;
        self.last_sync = std::time::Instant::now();
        Ok(())
    }

    /// Syncs when unsynced records are older than `interval`; returns whether it synced.
    pub fn sync_if_due(&mut self, interval: std::time::Duration) -> Result<bool, StoreError> {
        if self.records == self.synced_records || self.last_sync.elapsed() < interval {
            if self.records == self.synced_records {
                self.last_sync = std::time::Instant::now();
            }
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// The segment being written.
    pub fn current_segment(&self) -> &Path {
        &self.path
    }
}

/// The append-only replay log of one run (state observations).
pub struct ReplayLog {
    log: SegmentLog,
    obs_dim: usize,
    act_dim: usize,
    payload: Vec<u8>,
    /// Records appended since opening (plus those recovered).
    pub records: u64,
    /// Records known to be on disk (synced, or recovered from it).
    pub synced_records: u64,
}

impl ReplayLog {
    /// Opens (or creates) the log in `dir`, returning every complete step found and what the
    /// recovery did. Steps must have the given widths.
    pub fn open(
        dir: &Path,
        obs_dim: usize,
        act_dim: usize,
    ) -> Result<(Self, Recovered, Recovery), StoreError> {
        let format = LogFormat {
            magic: *SEG_MAGIC,
            older: Some((
                *SEG_MAGIC_V1,
                "a replay segment of an older format (no episode and step ids, actions \
                 stored as clipped residuals): this version cannot resume that run; start \
                 a new one in another directory (the file is left as it is)",
            )),
            widths: vec![
                ("observations", obs_dim as u32),
                ("actions", act_dim as u32),
            ],
            payload_len: PAYLOAD_HEAD + 4 * (2 * obs_dim + act_dim),
        };
        let mut steps = Vec::new();
        let (log, rec) = SegmentLog::open(dir, format, &mut |p| {
            steps.push(step_from(p, obs_dim, act_dim))
        })?;
        let records = log.records;
        Ok((
            Self {
                log,
                obs_dim,
                act_dim,
                payload: Vec::new(),
                records,
                synced_records: records,
            },
            steps,
            rec,
        ))
    }

    /// Appends one step (buffered; [`ReplayLog::sync`] makes it durable).
    pub fn append(&mut self, step: &Step) -> Result<(), StoreError> {
        assert_eq!(step.obs.len(), self.obs_dim, "step observation width");
        assert_eq!(step.act.len(), self.act_dim, "step action width");
        let payload = &mut self.payload;
        payload.clear();
        RecordHead {
            source: step.source,
            terminated: step.terminated,
            episode_end: step.episode_end,
            reward: step.reward,
            episode: step.episode,
            step: step.step,
        }
        .write(0, payload);
        push_f32s(
            payload,
            step.obs.iter().chain(&step.act).chain(&step.next_obs),
        );
        self.log.append(&self.payload)?;
        self.records = self.log.records;
        Ok(())
    }

    /// Flushes buffered records and syncs them to disk.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.log.sync()?;
        self.synced_records = self.log.synced_records;
        Ok(())
    }

    /// Syncs when unsynced records are older than `interval`; returns whether it synced.
    pub fn sync_if_due(&mut self, interval: std::time::Duration) -> Result<bool, StoreError> {
        let synced = self.log.sync_if_due(interval)?;
        self.synced_records = self.log.synced_records;
        Ok(synced)
    }

    /// The segment being written.
    pub fn current_segment(&self) -> &Path {
        self.log.current_segment()
    }
}

/// A buffered appender to the segment at `path` (created when missing).
fn append_to(path: &Path) -> Result<BufWriter<File>, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    Ok(BufWriter::with_capacity(1 << 16, file))
}

/// Parses one record at the start of `b`: its payload when complete and intact.
fn read_record(b: &[u8], payload_len: usize) -> Option<&[u8]> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_le_bytes(b[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    if len != payload_len || b.len() < 8 + len {
        return None;
    }
    let payload = &b[8..8 + len];
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// The first offset at or after `from` where an intact record starts.
fn next_intact(bytes: &[u8], from: usize, payload_len: usize) -> Option<usize> {
    let want = (payload_len as u32).to_le_bytes();
    (from..bytes.len().saturating_sub(8 + payload_len - 1))
        .filter(|&p| bytes[p..p + 4] == want)
        .find(|&p| read_record(&bytes[p..], payload_len).is_some())
}

/// The length of a file.
fn recovered_len(path: &Path) -> Result<u64, StoreError> {
    Ok(std::fs::metadata(path).map_err(io_err(path))?.len())
}

/// Syncs a directory, so the entries created in it (a new file, a rename) survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same directory,
/// synced, renamed over `path`, then the directory synced. A crash leaves the old or the new
/// file, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(&dir)
}

/// What every replay record (state or pixels) starts with: flags (terminated 1, episode end
/// 2, demonstration 4, takeover 8; a log may use higher bits of its own), reward, episode id
/// and step id, [`PAYLOAD_HEAD`] bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecordHead {
    /// The step's stream.
    pub source: Source,
    /// Ended in a terminal state.
    pub terminated: bool,
    /// Ended its episode.
    pub episode_end: bool,
    /// Reward, as stored.
    pub reward: f32,
    /// Episode id.
    pub episode: u64,
    /// Step id within the episode.
    pub step: u64,
}

impl RecordHead {
    /// Appends the head to `out`, with `extra` flag bits set.
    pub fn write(&self, extra: u8, out: &mut Vec<u8>) {
        let flags = extra
            | u8::from(self.terminated)
            | (u8::from(self.episode_end) << 1)
            | (u8::from(self.source == Source::Demo) << 2)
            | (u8::from(self.source == Source::Intervention) << 3);
        out.extend_from_slice(&[flags, 0, 0, 0]);
        out.extend_from_slice(&self.reward.to_le_bytes());
        out.extend_from_slice(&self.episode.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
    }

    /// The head at the start of `payload`, and its flag byte.
    pub fn read(payload: &[u8]) -> (Self, u8) {
        let flags = payload[0];
        let source = if flags & 4 != 0 {
            Source::Demo
        } else if flags & 8 != 0 {
            Source::Intervention
        } else {
            Source::Online
        };
        let u = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        let head = Self {
            source,
            terminated: flags & 1 != 0,
            episode_end: flags & 2 != 0,
            reward: f32s(payload, 4, 1)[0],
            episode: u(8),
            step: u(16),
        };
        (head, flags)
    }
}

/// `n` little-endian `f32`s of `payload` from byte `at`.
pub fn f32s(payload: &[u8], at: usize, n: usize) -> Vec<f32> {
    payload[at..at + 4 * n]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

/// Appends `values` to `out` as little-endian `f32`s.
pub fn push_f32s<'a>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'a f32>) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn step_from(payload: &[u8], obs_dim: usize, act_dim: usize) -> Step {
    let (h, _) = RecordHead::read(payload);
    let o = PAYLOAD_HEAD;
    Step {
        episode: h.episode,
        step: h.step,
        source: h.source,
        reward: h.reward,
        terminated: h.terminated,
        episode_end: h.episode_end,
        obs: f32s(payload, o, obs_dim),
        act: f32s(payload, o + 4 * obs_dim, act_dim),
        next_obs: f32s(payload, o + 4 * (obs_dim + act_dim), obs_dim),
    }
}

/// A checkpoint's contents: named f32 tensors and JSON metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors by name (flat).
    pub tensors: Vec<(String, Vec<f32>)>,
    /// Counters, optimiser steps, configuration.
    pub meta: serde_json::Value,
}

impl Checkpoint {
    /// The tensor called `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&[f32], String> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| format!("tensor `{name}` is missing"))
    }

    /// Copies the tensor called `name` into `into`, which must have its length; the error
    /// names the tensor.
    pub fn copy_into(&self, name: &str, into: &mut [f32]) -> Result<(), String> {
        let v = self.tensor(name)?;
        if v.len() != into.len() {
            return Err(format!(
                "tensor `{name}` has {} values, expected {}",
                v.len(),
                into.len()
            ));
        }
        into.copy_from_slice(v);
        Ok(())
    }
}

/// Writes `ckpt` as `dir/ckpt-<step>.bin` atomically and keeps the two newest.
pub fn save_checkpoint(dir: &Path, step: u64, ckpt: &Checkpoint) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = ckpt
        .tensors
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                vec![v.len()],
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, d, s)| {
            let view = TensorView::new(Dtype::F32, s.clone(), d)
                .unwrap_or_else(|_| unreachable!("sizes match by construction"));
            (n.clone(), view)
        })
        .collect();
    let meta = HashMap::from([("meta".to_owned(), ckpt.meta.to_string())]);
    let payload = safetensors::tensor::serialize(views, Some(meta))
        .unwrap_or_else(|_| unreachable!("valid views always serialise"));
    let mut bytes = Vec::with_capacity(payload.len() + 20);
    bytes.extend_from_slice(CKPT_MAGIC);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let path = dir.join(format!("ckpt-{step:012}.bin"));
    let tmp = dir.join(format!(".ckpt-{step:012}.bin.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let all = list_checkpoints(dir)?;
    for old in all.iter().rev().skip(2) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Checkpoint files in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".bin"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads one checkpoint; a damaged or foreign file is refused with the reason.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, StoreError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.len() < 20 || &bytes[..8] != CKPT_MAGIC {
        return Err(corrupt(path, "not a Reflex checkpoint (bad header)"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if bytes.len() - 20 != len {
        return Err(corrupt(
            path,
            format!(
                "truncated or padded: header says {len} payload bytes, file has {}",
                bytes.len() - 20
            ),
        ));
    }
    let payload = &bytes[20..];
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(path, "checksum mismatch: the file is damaged"));
    }
    let st =
        SafeTensors::deserialize(payload).map_err(|e| corrupt(path, format!("payload: {e}")))?;
    let (_, md) =
        SafeTensors::read_metadata(payload).map_err(|e| corrupt(path, format!("payload: {e}")))?;
    let meta = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get("meta"))
        .ok_or_else(|| corrupt(path, "metadata `meta` is missing"))?;
    let meta: serde_json::Value =
        serde_json::from_str(meta).map_err(|e| corrupt(path, format!("metadata `meta`: {e}")))?;
    let mut tensors = Vec::new();
    for name in st.names() {
        let t = st
            .tensor(name)
            .map_err(|e| corrupt(path, format!("`{name}`: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(corrupt(path, format!("`{name}`: expected F32")));
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push((name.to_owned(), v));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint { tensors, meta })
}

/// The newest checkpoint in `dir` that loads and that `accept` takes, falling back to older
/// ones with a warning for each that does not. `Ok(None)` when there is none at all.
pub fn load_latest<T>(
    dir: &Path,
    mut accept: impl FnMut(Checkpoint) -> Result<T, String>,
) -> Result<Option<(T, PathBuf)>, StoreError> {
    let all = list_checkpoints(dir)?;
    let mut failures = Vec::new();
    for path in all.iter().rev() {
        match load_checkpoint(path).and_then(|c| accept(c).map_err(|m| corrupt(path, m))) {
            Ok(t) => {
                for f in &failures {
                    tracing::warn!("skipped checkpoint: {f}");
                }
                return Ok(Some((t, path.clone())));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(None)
    } else {
        Err(corrupt(
            dir,
            format!("no usable checkpoint: {}", failures.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize) -> Step {
        Step {
            episode: (i / 7) as u64,
            step: (i % 7) as u64,
            source: source_of(i),
            obs: vec![i as f32, 1.0],
            act: vec![-(i as f32)],
            reward: i as f32 * 0.5,
            terminated: i % 7 == 6,
            episode_end: i % 7 == 6,
            next_obs: vec![i as f32 + 1.0, 2.0],
        }
    }

    fn source_of(i: usize) -> Source {
        match i {
            0..=2 => Source::Demo,
            5 => Source::Intervention,
            _ => Source::Online,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reflex-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_torn_tail_is_dropped_and_appending_continues() {
        let dir = temp_dir("replay-torn");
        {
            let (mut log, steps, _) = ReplayLog::open(&dir, 2, 1).unwrap();
            assert!(steps.is_empty());
            for i in 0..10 {
                log.append(&step(i)).unwrap();
            }
            log.sync().unwrap();
            assert_eq!(log.synced_records, 10);
        }
        // A crash in the middle of the 11th record: half of it reached the disk.
        let seg = dir.join("000000.seg");
        let full = std::fs::metadata(&seg).unwrap().len();
        let rec = (full - 16) / 10;
        {
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            // The first half of a record: a valid length prefix, the payload cut short.
            let partial = std::fs::read(&seg).unwrap()[16..16 + rec as usize / 2].to_vec();
            f.write_all(&partial).unwrap();
        }
        let (mut log, steps, rec_report) = ReplayLog::open(&dir, 2, 1).unwrap();
        assert_eq!(steps.len(), 10);
        assert_eq!(rec_report.torn_bytes, rec / 2);
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s, &step(i), "ids, source and values come back exactly");
        }
        log.append(&step(10)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, steps, rec_report) = ReplayLog::open(&dir, 2, 1).unwrap();
        assert_eq!(steps.len(), 11);
        assert_eq!(rec_report.torn_bytes, 0);
        // Widths that do not match the run are refused, naming the file.
        let err = ReplayLog::open(&dir, 3, 1).err().unwrap().to_string();
        assert!(
            err.contains("000000.seg") && err.contains("observations of 2"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A damaged record in the middle of a segment costs that record only. The old reader
    /// stopped at the first bad record and lost every record after it (and, in the last
    /// segment, cut them off the disk).
    #[test]
    fn a_damaged_record_in_the_middle_costs_only_that_record() {
        let dir = temp_dir("replay-damaged");
        {
            let (mut log, _, _) = ReplayLog::open(&dir, 2, 1).unwrap();
            for i in 0..20 {
                log.append(&step(i)).unwrap();
            }
            log.sync().unwrap();
        }
        let seg = dir.join("000000.seg");
        let mut bytes = std::fs::read(&seg).unwrap();
        let rec = (bytes.len() - 16) / 20;
        // A flipped bit in record 5's payload, and record 12's length prefix overwritten.
        bytes[16 + 5 * rec + 30] ^= 0x40;
        bytes[16 + 12 * rec] = 0xFF;
        std::fs::write(&seg, &bytes).unwrap();
        let (mut log, steps, report) = ReplayLog::open(&dir, 2, 1).unwrap();
        let kept: Vec<usize> = steps.iter().map(|s| s.obs[0] as usize).collect();
        let want: Vec<usize> = (0..20).filter(|i| *i != 5 && *i != 12).collect();
        assert_eq!(kept, want);
        assert_eq!(report.damaged_records, 2);
        assert_eq!(report.skipped_bytes, 2 * rec as u64);
        assert_eq!(report.torn_bytes, 0);
        // Appending continues after the last intact record; the damaged ones stay skipped.
        log.append(&step(20)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, steps, _) = ReplayLog::open(&dir, 2, 1).unwrap();
        assert_eq!(steps.len(), 19);
        assert_eq!(steps.last().unwrap(), &step(20));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_older_format_is_refused_and_left_untouched() {
        let dir = temp_dir("replay-v1");
        std::fs::create_dir_all(&dir).unwrap();
        let seg = dir.join("000000.seg");
        let mut old = b"RFXSTEP1".to_vec();
        old.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, 9, 9, 9]);
        std::fs::write(&seg, &old).unwrap();
        let err = ReplayLog::open(&dir, 2, 1).err().unwrap().to_string();
        assert!(
            err.contains("000000.seg") && err.contains("older format"),
            "{err}"
        );
        assert_eq!(std::fs::read(&seg).unwrap(), old);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syncing_is_due_after_the_interval_only_with_unsynced_records() {
        let dir = temp_dir("replay-sync");
        let (mut log, _, _) = ReplayLog::open(&dir, 2, 1).unwrap();
        assert!(!log.sync_if_due(std::time::Duration::ZERO).unwrap());
        log.append(&step(0)).unwrap();
        assert!(!log
            .sync_if_due(std::time::Duration::from_secs(3600))
            .unwrap());
        assert!(log.sync_if_due(std::time::Duration::ZERO).unwrap());
        assert_eq!(log.synced_records, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused_and_the_previous_one_used() {
        let dir = std::env::temp_dir().join(format!("reflex-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ck = |v: f32| Checkpoint {
            tensors: vec![("a".into(), vec![v, 2.0]), ("b".into(), vec![3.0])],
            meta: serde_json::json!({"updates": v}),
        };
        save_checkpoint(&dir, 1, &ck(1.0)).unwrap();
        save_checkpoint(&dir, 2, &ck(2.0)).unwrap();
        let p3 = save_checkpoint(&dir, 3, &ck(3.0)).unwrap();
        assert_eq!(
            list_checkpoints(&dir).unwrap().len(),
            2,
            "keeps the two newest"
        );
        assert_eq!(load_checkpoint(&p3).unwrap(), ck(3.0));
        // Damage the newest.
        let mut bytes = std::fs::read(&p3).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xFF;
        std::fs::write(&p3, &bytes).unwrap();
        let err = load_checkpoint(&p3).unwrap_err().to_string();
        assert!(
            err.contains("ckpt-000000000003.bin") && err.contains("checksum"),
            "{err}"
        );
        let (got, path) = load_latest(&dir, Ok).unwrap().unwrap();
        assert_eq!(got, ck(2.0));
        assert!(path.ends_with("ckpt-000000000002.bin"));
        // Truncated: refused with the sizes.
        std::fs::write(&p3, &bytes[..n / 2]).unwrap();
        let err = load_checkpoint(&p3).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        // Not a checkpoint at all.
        std::fs::write(&p3, b"hello").unwrap();
        let err = load_checkpoint(&p3).unwrap_err().to_string();
        assert!(err.contains("not a Reflex checkpoint"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
