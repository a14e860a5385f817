//! Replay for SAC from pixels ([`crate::pixel_sac`]): the n-step records of [`crate::replay`]
//! with their images kept once per step.
//!
//! A step's image is stored once, in a [`FrameStore`] of its stream (demonstrations or online
//! steps), under a serial number. The record's observation row is the proprioception followed
//! by that serial in two columns (its high and low 20 bits, each exact in an `f32`), so
//! [`NStep`] and [`Ring`] carry images by reference exactly as they carry states, and the
//! record `k` steps on finds the later image by the later step's serial. Each frame store holds
//! twice its ring's records (a step stores one image, an episode's end one more), so every held
//! record finds both of its images; a sampled row whose image is gone anyway (episodes of one
//! step each) is drawn again.

use crate::pixel_sac::PixelBatch;
use crate::replay::{demo_rows, Batch, NStep, Record, Ring, Source, Step};
use crate::rng::Rng;
use crate::store::{
    f32s, push_f32s, LogFormat, RecordHead, Recovery, SegmentLog, StoreError, PAYLOAD_HEAD,
};

/// Images in arrival order, the oldest overwritten, each found by the serial `push` gave it.
#[derive(Clone, Debug)]
pub struct FrameStore {
    frame_len: usize,
    capacity: usize,
    bytes: Vec<u8>,
    next: u64,
}

impl FrameStore {
    /// Room for `capacity` images of `frame_len` bytes, allocated as they arrive.
    pub fn new(frame_len: usize, capacity: usize) -> Self {
        assert!(capacity > 0 && frame_len > 0, "a frame store needs room");
        Self {
            frame_len,
            capacity,
            bytes: Vec::new(),
            next: 0,
        }
    }

    /// Stores `frame` (exactly `frame_len` bytes) and returns its serial.
    pub fn push(&mut self, frame: &[u8]) -> u64 {
        assert_eq!(frame.len(), self.frame_len, "frame size");
        let slot = (self.next % self.capacity as u64) as usize;
        let at = slot * self.frame_len;
        if self.bytes.len() < at + self.frame_len {
            self.bytes.resize(at + self.frame_len, 0);
        }
        self.bytes[at..at + self.frame_len].copy_from_slice(frame);
        self.next += 1;
        self.next - 1
    }

    /// The image of `serial`, unless it was overwritten (or never stored).
    pub fn get(&self, serial: u64) -> Option<&[u8]> {
        if serial >= self.next || serial + (self.capacity as u64) < self.next {
            return None;
        }
        let at = (serial % self.capacity as u64) as usize * self.frame_len;
        Some(&self.bytes[at..at + self.frame_len])
    }

    /// Images ever stored.
    pub fn stored(&self) -> u64 {
        self.next
    }
}

/// The two exact `f32` columns a serial travels in.
fn serial_columns(serial: u64) -> [f32; 2] {
    assert!(serial < 1 << 40, "frame serial beyond 2^40");
    [(serial >> 20) as f32, (serial & 0xF_FFFF) as f32]
}

fn serial_of(columns: &[f32]) -> u64 {
    ((columns[0] as u64) << 20) | columns[1] as u64
}

/// One step seen through a camera, as the learner takes it in.
#[derive(Clone, Debug)]
pub struct PixelStep<'a> {
    /// Episode id within its stream.
    pub episode: u64,
    /// Policy step within the episode.
    pub step: u64,
    /// The image the action was chosen on.
    pub image: &'a [u8],
    /// The proprioception it was chosen on (with a residual agent, the base action last).
    pub proprio: &'a [f32],
    /// The action executed.
    pub act: &'a [f32],
    /// Reward (already scaled for learning).
    pub reward: f32,
    /// The episode ended in a terminal state.
    pub terminated: bool,
    /// The episode ended here for any reason.
    pub episode_end: bool,
    /// The image after the step: needed only at an episode's end (otherwise the next step's
    /// image is the one after this step).
    pub next_image: Option<&'a [u8]>,
    /// The proprioception after the step: needed only at an episode's end, or before a gap
    /// (otherwise the next step's `proprio` is the one after this step).
    pub next_proprio: &'a [f32],
}

struct Stream {
    frames: FrameStore,
    ring: Ring,
    nstep: NStep,
    /// The serial of the image of the previous step pushed, by episode: it is the previous
    /// step's next image.
    last: Option<(u64, u64, Step)>,
}

/// The demonstration and online streams, each with its images, n-step windows and records;
/// sampled RLPD-style into a [`PixelBatch`].
pub struct PixelReplay {
    proprio_dim: usize,
    act_dim: usize,
    frame_len: usize,
    demo: Stream,
    online: Stream,
    batch: Batch,
    images: Vec<u8>,
    next_images: Vec<u8>,
    proprio: Vec<f32>,
    next_proprio: Vec<f32>,
    /// Rows drawn again because an image was gone.
    pub redrawn: u64,
}

impl PixelReplay {
    /// Replay for images of `frame_len` bytes, `proprio_dim` proprioception values and
    /// `act_dim` actions; the rings hold `demo_capacity` and `online_capacity` records, over
    /// `n_step` steps discounted by `gamma`.
    pub fn new(
        frame_len: usize,
        proprio_dim: usize,
        act_dim: usize,
        demo_capacity: usize,
        online_capacity: usize,
        n_step: usize,
        gamma: f32,
    ) -> Self {
        let stream = |cap: usize| Stream {
            frames: FrameStore::new(frame_len, 2 * cap + 16),
            ring: Ring::new(cap, proprio_dim + 2, act_dim),
            nstep: NStep::new(n_step, gamma),
            last: None,
        };
        Self {
            proprio_dim,
            act_dim,
            frame_len,
            demo: stream(demo_capacity),
            online: stream(online_capacity),
            batch: Batch::new(0, proprio_dim + 2, act_dim),
            images: Vec::new(),
            next_images: Vec::new(),
            proprio: Vec::new(),
            next_proprio: Vec::new(),
            redrawn: 0,
        }
    }

    /// Records held: (demonstrations, online).
    pub fn len(&self) -> (usize, usize) {
        (self.demo.ring.len(), self.online.ring.len())
    }

    /// True when neither ring holds a record.
    pub fn is_empty(&self) -> bool {
        self.demo.ring.is_empty() && self.online.ring.is_empty()
    }

    /// Images stored: (demonstrations, online).
    pub fn frames_stored(&self) -> (u64, u64) {
        (self.demo.frames.stored(), self.online.frames.stored())
    }

    /// Adds one step to `source`'s stream (an operator's takeover counts as a demonstration).
    /// A step's next image is the following step's image, so a step is completed when the next
    /// one of its episode arrives, or at once when it ends its episode (with its `next_image`).
    /// A step that does not follow its episode's previous one closes the previous one as a
    /// truncation with its own image standing in as the next (a held or dropped step between).
    pub fn push(&mut self, source: Source, s: &PixelStep) -> Result<(), String> {
        let p = self.proprio_dim;
        if s.image.len() != self.frame_len
            || s.proprio.len() != p
            || s.next_proprio.len() != p
            || s.act.len() != self.act_dim
        {
            return Err(format!(
                "a step of {} image bytes, {} + {} proprioception values and {} actions does \
                 not fit replay of {} bytes, {p} values and {} actions",
                s.image.len(),
                s.proprio.len(),
                s.next_proprio.len(),
                s.act.len(),
                self.frame_len,
                self.act_dim
            ));
        }
        if s.episode_end && s.next_image.is_none_or(|i| i.len() != self.frame_len) {
            return Err("a step that ends its episode needs its next image".into());
        }
        let stream = match source {
            Source::Demo | Source::Intervention => &mut self.demo,
            Source::Online => &mut self.online,
        };
        let serial = stream.frames.push(s.image);
        // The previous step of this episode now has its next image.
        if let Some((episode, step, mut prev)) = stream.last.take() {
            let follows = episode == s.episode && step + 1 == s.step;
            if follows {
                // The state after the previous step is this step's: its proprioception (with
                // a residual agent, the base's action here) and its image.
                prev.next_obs[..p].copy_from_slice(s.proprio);
                prev.next_obs[p..].copy_from_slice(&serial_columns(serial));
            } else {
                let own = serial_of(&prev.obs[p..]);
                prev.next_obs[p..].copy_from_slice(&serial_columns(own));
                prev.episode_end = true;
            }
            push_step(stream, prev);
        }
        let mut obs = Vec::with_capacity(p + 2);
        obs.extend_from_slice(s.proprio);
        obs.extend_from_slice(&serial_columns(serial));
        let mut next_obs = Vec::with_capacity(p + 2);
        next_obs.extend_from_slice(s.next_proprio);
        next_obs.extend_from_slice(&[0.0, 0.0]);
        let step = Step {
            episode: s.episode,
            step: s.step,
            source,
            obs,
            act: s.act.to_vec(),
            reward: s.reward,
            terminated: s.terminated,
            episode_end: s.episode_end,
            next_obs,
        };
        if let (true, Some(img)) = (s.episode_end, s.next_image) {
            let mut step = step;
            let last = stream.frames.push(img);
            step.next_obs[p..].copy_from_slice(&serial_columns(last));
            push_step(stream, step);
        } else {
            stream.last = Some((s.episode, s.step, step));
        }
        Ok(())
    }

    /// Draws `size` rows, `demo_fraction` of them from the demonstrations (RLPD), and returns
    /// them with their images. `None` while both rings are empty.
    pub fn sample(
        &mut self,
        rng: &mut Rng,
        size: usize,
        demo_fraction: f32,
    ) -> Option<PixelBatch<'_>> {
        if self.is_empty() || size == 0 {
            return None;
        }
        let (p, o) = (self.proprio_dim, self.proprio_dim + 2);
        let k = demo_rows(
            size,
            demo_fraction,
            self.demo.ring.len(),
            self.online.ring.len(),
        );
        let b = &mut self.batch;
        if b.size != size {
            *b = Batch::new(size, o, self.act_dim);
        }
        b.demo_rows = k;
        self.images.resize(size * self.frame_len, 0);
        self.next_images.resize(size * self.frame_len, 0);
        self.proprio.resize(size * p, 0.0);
        self.next_proprio.resize(size * p, 0.0);
        let f = self.frame_len;
        for row in 0..size {
            let stream = if row < k { &self.demo } else { &self.online };
            // Bounded: a row whose images are gone is drawn again a few times, then kept with
            // its own image standing in (cannot happen while episodes last two steps or more).
            for attempt in 0..8 {
                stream.ring.sample_rows(rng, b, row..row + 1);
                let now = serial_of(&b.obs[row * o + p..(row + 1) * o]);
                let next = serial_of(&b.next_obs[row * o + p..(row + 1) * o]);
                let (Some(a), Some(z)) = (stream.frames.get(now), stream.frames.get(next)) else {
                    self.redrawn += 1;
                    if attempt == 7 {
                        tracing::warn!("a replay row kept without its images");
                    }
                    continue;
                };
                self.images[row * f..(row + 1) * f].copy_from_slice(a);
                self.next_images[row * f..(row + 1) * f].copy_from_slice(z);
                break;
            }
            self.proprio[row * p..(row + 1) * p].copy_from_slice(&b.obs[row * o..row * o + p]);
            self.next_proprio[row * p..(row + 1) * p]
                .copy_from_slice(&b.next_obs[row * o..row * o + p]);
        }
        Some(PixelBatch {
            size,
            images: &self.images,
            proprio: &self.proprio,
            act: &b.act,
            reward: &b.reward,
            discount: &b.discount,
            next_images: &self.next_images,
            next_proprio: &self.next_proprio,
            demo_rows: k,
        })
    }

    /// Every held proprioception row of both rings (to fit an input normaliser on).
    pub fn proprio_rows(&self) -> Vec<f32> {
        let (p, o) = (self.proprio_dim, self.proprio_dim + 2);
        [&self.demo.ring, &self.online.ring]
            .iter()
            .flat_map(|r| r.observations().chunks_exact(o).map(|row| &row[..p]))
            .flatten()
            .copied()
            .collect()
    }
}

fn push_step(stream: &mut Stream, step: Step) {
    let ring = &mut stream.ring;
    stream.nstep.push(step, |r: Record| ring.push(&r));
}

/// The append-only log of a run's pixel steps, for `--resume` after a crash: segments of a
/// [`SegmentLog`] with magic `RFXPIX01`, whose header holds the proprioception's width, the
/// action's and the image's bytes. A record is one step as [`PixelReplay::push`] took it:
/// flags (terminated 1, episode end 2, demonstration 4, takeover 8), reward, episode, step,
/// proprioception, action, next proprioception, image. A step that ends its episode is followed
/// by a record holding only the picture after it (flag 16). Reopening hands the steps back in
/// order; an end step whose picture record was lost to a torn tail is left out.
pub struct PixelLog {
    log: SegmentLog,
    proprio: usize,
    act: usize,
    image: usize,
    payload: Vec<u8>,
}

const PIXEL_MAGIC: &[u8; 8] = b"RFXPIX01";
/// Bytes before the vectors: the [`RecordHead`].
const PIXEL_HEAD: usize = PAYLOAD_HEAD;
const AFTER: u8 = 16;

/// One step read back from a [`PixelLog`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedStep {
    /// Its stream.
    pub source: Source,
    /// Episode id within its stream.
    pub episode: u64,
    /// Policy step within the episode.
    pub step: u64,
    /// The image the action was chosen on.
    pub image: Vec<u8>,
    /// The proprioception row.
    pub proprio: Vec<f32>,
    /// The action executed.
    pub act: Vec<f32>,
    /// Reward, as stored.
    pub reward: f32,
    /// Ended in a terminal state.
    pub terminated: bool,
    /// Ended its episode.
    pub episode_end: bool,
    /// The picture after an episode's last step.
    pub next_image: Option<Vec<u8>>,
    /// The proprioception row after the step.
    pub next_proprio: Vec<f32>,
}

impl LoggedStep {
    /// The step as [`PixelReplay::push`] takes it.
    pub fn as_step(&self) -> PixelStep<'_> {
        PixelStep {
            episode: self.episode,
            step: self.step,
            image: &self.image,
            proprio: &self.proprio,
            act: &self.act,
            reward: self.reward,
            terminated: self.terminated,
            episode_end: self.episode_end,
            next_image: self.next_image.as_deref(),
            next_proprio: &self.next_proprio,
        }
    }
}

impl PixelLog {
    /// Opens (or creates) the log in `dir` for steps of `proprio` values, `act` actions and
    /// images of `image` bytes; every complete step found goes to `step`, in order.
    pub fn open(
        dir: &std::path::Path,
        proprio: usize,
        act: usize,
        image: usize,
        step: &mut dyn FnMut(LoggedStep),
    ) -> Result<(Self, Recovery), StoreError> {
        let format = LogFormat {
            magic: *PIXEL_MAGIC,
            older: None,
            widths: vec![
                ("proprioception rows", proprio as u32),
                ("actions", act as u32),
                ("image bytes", image as u32),
            ],
            payload_len: PIXEL_HEAD + 4 * (2 * proprio + act) + image,
        };
        // An end step waits for the record of the picture after it.
        let mut waiting: Option<LoggedStep> = None;
        let mut lost = 0u64;
        let (log, rec) = SegmentLog::open(dir, format, &mut |p| {
            let (h, flags) = RecordHead::read(p);
            let img_at = PIXEL_HEAD + 4 * (2 * proprio + act);
            if flags & AFTER != 0 {
                match waiting.take() {
                    Some(mut s) if s.episode == h.episode && s.step == h.step => {
                        s.next_image = Some(p[img_at..].to_vec());
                        step(s);
                    }
                    other => lost += u64::from(other.is_some()),
                }
                return;
            }
            if waiting.take().is_some() {
                lost += 1;
            }
            let s = LoggedStep {
                source: h.source,
                episode: h.episode,
                step: h.step,
                reward: h.reward,
                terminated: h.terminated,
                episode_end: h.episode_end,
                proprio: f32s(p, PIXEL_HEAD, proprio),
                act: f32s(p, PIXEL_HEAD + 4 * proprio, act),
                next_proprio: f32s(p, PIXEL_HEAD + 4 * (proprio + act), proprio),
                image: p[img_at..].to_vec(),
                next_image: None,
            };
            if s.episode_end {
                waiting = Some(s);
            } else {
                step(s);
            }
        })?;
        lost += u64::from(waiting.is_some());
        if lost > 0 {
            tracing::warn!(
                steps = lost,
                "pixel replay: episode ends without the picture after them were left out"
            );
        }
        Ok((
            Self {
                log,
                proprio,
                act,
                image,
                payload: Vec::new(),
            },
            rec,
        ))
    }

    /// Appends one step of `source` (buffered; [`PixelLog::sync`] makes it durable).
    pub fn append(&mut self, source: Source, s: &PixelStep) -> Result<(), StoreError> {
        assert_eq!(s.proprio.len(), self.proprio, "step proprioception width");
        assert_eq!(s.act.len(), self.act, "step action width");
        assert_eq!(s.image.len(), self.image, "step image bytes");
        let head = RecordHead {
            source,
            terminated: s.terminated,
            episode_end: s.episode_end,
            reward: s.reward,
            episode: s.episode,
            step: s.step,
        };
        self.write(&head, 0, s, s.image)?;
        if let (true, Some(after)) = (s.episode_end, s.next_image) {
            self.write(&head, AFTER, s, after)?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        head: &RecordHead,
        extra: u8,
        s: &PixelStep,
        image: &[u8],
    ) -> Result<(), StoreError> {
        let p = &mut self.payload;
        p.clear();
        head.write(extra, p);
        push_f32s(p, s.proprio.iter().chain(s.act).chain(s.next_proprio));
        p.extend_from_slice(image);
        self.log.append(&self.payload)
    }

    /// Flushes and syncs to disk.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.log.sync()
    }

    /// Syncs when unsynced records are older than `interval`.
    pub fn sync_if_due(&mut self, interval: std::time::Duration) -> Result<bool, StoreError> {
        self.log.sync_if_due(interval)
    }

    /// Records written or recovered (a step that ends its episode takes two).
    pub fn records(&self) -> u64 {
        self.log.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(v: u8) -> Vec<u8> {
        vec![v; 4]
    }

    /// Steps of two episodes (the second ending on step 2, with the picture after it) and one
    /// demonstration step, as a log writes and reads them.
    fn logged() -> Vec<LoggedStep> {
        let step = |source, episode, step: u64, end: bool| LoggedStep {
            source,
            episode,
            step,
            image: img(10 * episode as u8 + step as u8),
            proprio: vec![step as f32, -1.5],
            act: vec![0.25],
            reward: step as f32 * 0.5,
            terminated: end,
            episode_end: end,
            next_image: end.then(|| img(99)),
            next_proprio: vec![step as f32 + 1.0, -1.5],
        };
        vec![
            step(Source::Demo, 0, 0, false),
            step(Source::Online, 1, 0, false),
            step(Source::Online, 1, 1, false),
            step(Source::Online, 2, 0, false),
            step(Source::Online, 2, 1, false),
            step(Source::Online, 2, 2, true),
        ]
    }

    /// The pixel log hands back every step it was given, the picture after an episode's end
    /// included; a torn tail that takes that picture's record leaves the end step out (and
    /// keeps every step before it), and appending goes on after what was kept. A segment of
    /// other widths is refused naming its file.
    #[test]
    fn the_pixel_log_reads_back_its_steps_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("reflex-pixlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let steps = logged();
        {
            let (mut log, rec) = PixelLog::open(&dir, 2, 1, 4, &mut |_| panic!("empty")).unwrap();
            assert_eq!(rec.records, 0);
            for s in &steps {
                log.append(s.source, &s.as_step()).unwrap();
            }
            log.sync().unwrap();
            assert_eq!(log.records(), 7, "an end step takes two records");
        }
        let mut back = Vec::new();
        let (_, rec) = PixelLog::open(&dir, 2, 1, 4, &mut |s| back.push(s)).unwrap();
        assert_eq!((rec.records, rec.torn_bytes), (7, 0));
        assert_eq!(back, steps);

        // Tear the last record (the picture after the end) in half.
        let seg = dir.join("000000.seg");
        let len = std::fs::metadata(&seg).unwrap().len();
        let record = 8 + 24 + 4 * (2 * 2 + 1) + 4;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - record as u64 / 2).unwrap();
        drop(f);
        let mut back = Vec::new();
        let (mut log, rec) = PixelLog::open(&dir, 2, 1, 4, &mut |s| back.push(s)).unwrap();
        assert_eq!(rec.records, 6);
        assert!(rec.torn_bytes > 0);
        assert_eq!(
            back,
            steps[..5].to_vec(),
            "the end step without its picture left out"
        );
        // Appending continues after the last complete record.
        log.append(Source::Online, &steps[5].as_step()).unwrap();
        log.sync().unwrap();
        drop(log);
        let mut back = Vec::new();
        PixelLog::open(&dir, 2, 1, 4, &mut |s| back.push(s)).unwrap();
        assert_eq!(back, steps);

        let err = match PixelLog::open(&dir, 3, 1, 4, &mut |_| {}) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("other widths were accepted"),
        };
        assert!(
            err.contains("000000.seg") && err.contains("proprioception rows of 2"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An episode of steps whose image and proprioception both carry the step number: every
    /// sampled record must pair the image and the proprioception of one step, and its next image
    /// that of the step `k` later (the episode's last image after its end).
    #[test]
    fn records_carry_the_images_of_their_own_steps() {
        let mut r = PixelReplay::new(4, 1, 1, 8, 64, 2, 0.5);
        for ep in 0..3u64 {
            let len = 5u64;
            for st in 0..len {
                let v = (ep * 10 + st) as u8;
                let end = st + 1 == len;
                let last = img(v + 1);
                r.push(
                    Source::Online,
                    &PixelStep {
                        episode: ep,
                        step: st,
                        image: &img(v),
                        proprio: &[f32::from(v)],
                        act: &[0.1],
                        reward: 1.0,
                        terminated: false,
                        episode_end: end,
                        next_image: end.then_some(&last[..]),
                        next_proprio: &[f32::from(v + 1)],
                    },
                )
                .unwrap();
            }
        }
        assert_eq!(r.len(), (0, 15));
        assert_eq!(r.frames_stored(), (0, 18));
        let mut rng = Rng::new(3);
        let b = r.sample(&mut rng, 200, 0.5).unwrap();
        for row in 0..200 {
            let v = b.proprio[row];
            assert_eq!(f32::from(b.images[row * 4]), v, "row {row}");
            // Two steps on, or to the episode's end (its steps are numbered ep*10 + 0..5).
            let end = (v / 10.0).floor() * 10.0 + 5.0;
            let want = (v + 2.0).min(end);
            assert_eq!(f32::from(b.next_images[row * 4]), want, "row {row}");
            assert_eq!(b.next_proprio[row], want, "row {row}");
            let full = v + 2.0 <= end;
            assert_eq!(
                b.discount[row],
                if full {
                    0.25
                } else {
                    0.5f32.powi((end - v) as i32)
                }
            );
        }
        assert_eq!(r.redrawn, 0);
    }

    /// A missing step closes its episode's previous step as a truncation with its own image
    /// standing in, so no record ever pairs images across the gap.
    #[test]
    fn a_gap_in_the_steps_never_joins_images_across_it() {
        let mut r = PixelReplay::new(4, 1, 1, 8, 64, 3, 0.9);
        for st in [0u64, 1, 3, 4] {
            let end = st == 4;
            let last = img(99);
            r.push(
                Source::Online,
                &PixelStep {
                    episode: 1,
                    step: st,
                    image: &img(st as u8),
                    proprio: &[st as f32],
                    act: &[0.0],
                    reward: 0.0,
                    terminated: end,
                    episode_end: end,
                    next_image: end.then_some(&last[..]),
                    next_proprio: &[st as f32 + 1.0],
                },
            )
            .unwrap();
        }
        let mut rng = Rng::new(1);
        let b = r.sample(&mut rng, 100, 0.0).unwrap();
        for row in 0..100 {
            let (now, next) = (b.images[row * 4], b.next_images[row * 4]);
            assert!(
                (now < 2 && next < 2) || (now >= 3 && (next == 4 || next == 99)),
                "{now} -> {next} spans the gap"
            );
        }
    }

    #[test]
    fn an_evicted_image_is_not_returned() {
        let mut f = FrameStore::new(2, 3);
        let s: Vec<u64> = (0..5u8).map(|v| f.push(&[v, v])).collect();
        assert_eq!(f.get(s[0]), None);
        assert_eq!(f.get(s[1]), None);
        assert_eq!(f.get(s[2]), Some(&[2u8, 2][..]));
        assert_eq!(f.get(s[4]), Some(&[4u8, 4][..]));
        assert_eq!(f.get(5), None);
        assert_eq!(serial_of(&serial_columns(123_456_789)), 123_456_789);
    }
}
