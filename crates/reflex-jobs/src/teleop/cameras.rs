//! A session's camera streams: one frame per policy step and camera, written losslessly (FFV1 in
//! Matroska) by the system's `ffmpeg` as the session runs, and read back frame by frame for an
//! export.
//!
//! The control thread renders the cameras after every tick that begins a policy step
//! ([`reflex_runtime::Runtime::run_observed`]), into frame sets it takes from a pool and hands to
//! the drain thread through a bounded queue; the drain thread writes them and hands the sets
//! back. Nothing on the control thread allocates or waits: when the pool is empty (the writer
//! fell behind), the step's frames are skipped and counted. Each recorded episode keeps, per
//! step, the index of its frame in the streams (`FrameRef`); a skipped frame repeats the one
//! before it, so an episode's video always has exactly one frame per step.
//!
//! A session writes its streams into `cameras/part-NNN/<camera>.mkv`; a resumed session opens
//! the next part, so nothing recorded is ever rewritten.

use reflex_core::Frame;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The folder of a session's camera streams.
pub const CAMERAS_DIR: &str = "cameras";

/// One policy step's frames, one per recorded camera (in the header's order).
pub struct FrameSet {
    /// The episode.
    pub episode: u64,
    /// The step within it.
    pub step: u64,
    /// The frames.
    pub frames: Vec<Frame>,
}

impl FrameSet {
    /// A set of `cameras` blank frames of the given size.
    pub fn new(cameras: usize, width: usize, height: usize) -> Self {
        Self {
            episode: 0,
            step: 0,
            frames: (0..cameras).map(|_| Frame::new(width, height)).collect(),
        }
    }
}

/// Where an episode's frames are: the part (`cameras/part-NNN`) and, per step, the frame's index
/// in each of that part's streams.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameRef {
    /// The part's number.
    pub part: u32,
    /// Per step, the frame's index in the part's streams.
    pub at: Vec<u64>,
}

/// The path of a camera's stream in a part.
pub fn stream_path(dir: &Path, part: u32, camera: &str) -> PathBuf {
    dir.join(CAMERAS_DIR)
        .join(format!("part-{part:03}"))
        .join(format!("{camera}.mkv"))
}

/// Why `ffmpeg` could not be used, in words a user can act on.
fn spawn_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "ffmpeg was not found on PATH (Debian: apt-get install ffmpeg)".into()
    } else {
        format!("ffmpeg could not be started: {e}")
    }
}

struct Stream {
    camera: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Writes a session's camera streams (on the drain thread).
pub struct CameraRecorder {
    part: u32,
    width: usize,
    height: usize,
    streams: Vec<Stream>,
    /// Frames written per stream.
    written: u64,
    /// (episode, step, index) of the frames written and not yet claimed by an episode.
    index: VecDeque<(u64, u64, u64)>,
    failed: Option<String>,
}

impl CameraRecorder {
    /// Starts one `ffmpeg` per camera in the first free part of `dir/cameras`.
    pub fn open(
        dir: &Path,
        cameras: &[&str],
        width: usize,
        height: usize,
        fps: f64,
    ) -> Result<Self, String> {
        let mut part = 0u32;
        while dir
            .join(CAMERAS_DIR)
            .join(format!("part-{part:03}"))
            .exists()
        {
            part += 1;
        }
        let folder = dir.join(CAMERAS_DIR).join(format!("part-{part:03}"));
        std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        let mut streams = Vec::with_capacity(cameras.len());
        for camera in cameras {
            let path = stream_path(dir, part, camera);
            let log = folder.join(format!("{camera}.ffmpeg.log"));
            let log = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let mut child = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
                .args(["-s", &format!("{width}x{height}")])
                .args(["-r", &format!("{fps}")])
                .args(["-i", "-", "-c:v", "ffv1", "-level", "3"])
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(spawn_error)?;
            let stdin = child.stdin.take();
            streams.push(Stream {
                camera: camera.to_string(),
                child,
                stdin,
            });
        }
        Ok(Self {
            part,
            width,
            height,
            streams,
            written: 0,
            index: VecDeque::new(),
            failed: None,
        })
    }

    /// The part this session writes.
    pub fn part(&self) -> u32 {
        self.part
    }

    /// Why recording stopped, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Appends one step's frames to the streams.
    pub fn write(&mut self, set: &FrameSet) {
        if self.failed.is_some() {
            return;
        }
        for (s, f) in self.streams.iter_mut().zip(&set.frames) {
            let ok = f.width == self.width && f.height == self.height;
            let res = match (&mut s.stdin, ok) {
                (Some(w), true) => w.write_all(&f.rgb).map_err(|e| e.to_string()),
                (_, false) => Err(format!(
                    "a {}x{} frame in a {}x{} stream",
                    f.width, f.height, self.width, self.height
                )),
                (None, _) => Err("closed".into()),
            };
            if let Err(e) = res {
                let why = format!("camera `{}`: {e}; frames are no longer recorded", s.camera);
                tracing::error!("{why}");
                self.failed = Some(why);
                return;
            }
        }
        self.index.push_back((set.episode, set.step, self.written));
        self.written += 1;
    }

    /// The frames of `episode`'s `steps` steps (claimed: older entries are dropped). A step with
    /// no frame of its own shows the one before it (or, for the first steps, the first one the
    /// episode has); `None` when the episode has none, or recording failed.
    pub fn claim(&mut self, episode: u64, steps: usize) -> Option<FrameRef> {
        if self.failed.is_some() {
            return None;
        }
        let mut mine: Vec<(u64, u64)> = Vec::new();
        while let Some(&(e, s, i)) = self.index.front() {
            if e > episode {
                break;
            }
            self.index.pop_front();
            if e == episode {
                mine.push((s, i));
            }
        }
        let first = mine.first()?.1;
        let mut at = Vec::with_capacity(steps);
        let mut last = first;
        let mut k = 0;
        for step in 0..steps as u64 {
            while k < mine.len() && mine[k].0 < step {
                k += 1;
            }
            if k < mine.len() && mine[k].0 == step {
                last = mine[k].1;
            }
            at.push(last);
        }
        Some(FrameRef {
            part: self.part,
            at,
        })
    }

    /// Closes the streams and waits for `ffmpeg` to write them out.
    pub fn finish(mut self) -> Result<u64, String> {
        let mut errors = Vec::new();
        for s in &mut self.streams {
            drop(s.stdin.take());
            match s.child.wait() {
                Ok(st) if st.success() => {}
                Ok(st) => errors.push(format!("camera `{}`: ffmpeg {st}", s.camera)),
                Err(e) => errors.push(format!("camera `{}`: {e}", s.camera)),
            }
        }
        if let Some(f) = self.failed.take() {
            errors.insert(0, f);
        }
        if errors.is_empty() {
            Ok(self.written)
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for CameraRecorder {
    fn drop(&mut self) {
        for s in &mut self.streams {
            drop(s.stdin.take());
            let _ = s.child.wait();
        }
    }
}

/// Reads a recorded stream's frames in order, as RGB.
pub struct StreamReader {
    child: Child,
    out: ChildStdout,
    frame_bytes: usize,
    /// Frames read so far.
    pub read: u64,
    path: PathBuf,
}

impl StreamReader {
    /// Starts decoding `path`, whose frames are `width` x `height`.
    pub fn open(path: &Path, width: usize, height: usize) -> Result<Self, String> {
        if !path.exists() {
            return Err(format!("{}: no such camera stream", path.display()));
        }
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_error)?;
        let out = child.stdout.take().expect("piped");
        Ok(Self {
            child,
            out,
            frame_bytes: width * height * 3,
            read: 0,
            path: path.to_path_buf(),
        })
    }

    /// Reads frame `index` into `rgb`, which holds the last frame this reader read (so asking
    /// for it again reads nothing); frames are read in order, so `index` may not go back.
    pub fn seek_read(&mut self, index: u64, rgb: &mut Vec<u8>) -> Result<(), String> {
        if self.read > 0 && index + 1 == self.read {
            return Ok(());
        }
        if index < self.read {
            return Err(format!(
                "{}: frame {index} asked for after frame {}",
                self.path.display(),
                self.read - 1
            ));
        }
        rgb.resize(self.frame_bytes, 0);
        while self.read <= index {
            self.out.read_exact(rgb).map_err(|e| {
                format!(
                    "{}: frame {index}: the stream ended after {} frames ({e})",
                    self.path.display(),
                    self.read
                )
            })?;
            self.read += 1;
        }
        Ok(())
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_without_a_frame_repeats_the_one_before_and_claims_drop_older_episodes() {
        let mut r = CameraRecorder {
            part: 2,
            width: 4,
            height: 4,
            streams: Vec::new(),
            written: 0,
            index: VecDeque::new(),
            failed: None,
        };
        let set = |episode, step| FrameSet {
            episode,
            step,
            frames: Vec::new(),
        };
        // Episode 3 (never claimed: discarded), then episode 4 missing steps 0 and 2.
        for (e, s) in [(3, 0), (3, 1), (4, 1), (4, 3), (5, 0)] {
            r.write(&set(e, s));
        }
        let got = r.claim(4, 5).unwrap();
        assert_eq!(got.part, 2);
        assert_eq!(got.at, vec![2, 2, 2, 3, 3]);
        assert_eq!(r.index.len(), 1, "episode 5's frame stays");
        assert!(r.claim(4, 3).is_none(), "claimed once");
        assert_eq!(r.claim(5, 1).unwrap().at, vec![4]);
    }
}
