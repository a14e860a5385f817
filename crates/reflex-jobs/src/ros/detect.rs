//! `reflex ros detect`: a success detector node. A trained success classifier (`reflex
//! classifier train`, from the simulator or from sessions recorded on the arm) watches one
//! camera's `sensor_msgs/Image` topic and says on a `std_msgs/Bool` topic when the task is
//! done: the verdict an arm without an object tracker otherwise gets only from an operator's
//! button. The bridge's `success_topic` takes it, so `reflex ros run` and `reflex ros train`
//! (its evaluations included) end episodes on it unattended.
//!
//! - Each image is resampled to the classifier's side the way every camera image reaches a
//!   policy or a classifier ([`reflex_ros::camera::sample`]), `rgb8` or `bgr8` with any row
//!   padding; other encodings are refused and counted, never judged.
//! - The classifier judges the newest image only: images that arrived while it was busy are
//!   counted as superseded, so the verdict never lags behind the camera.
//! - [`SuccessEdge`]: `end_after` verdicts in a row (default 4) at or above the threshold
//!   publish `true` once. It is published again only after a "no" (a new scene after a
//!   reset), so one success cannot end the next episode too. A gap longer than `max_gap_s`
//!   between judged images breaks the run, as in training's `terminate` rule.
//! - Every verdict's probability goes out on `probability_topic` (`std_msgs/Float64`) for
//!   plots and for choosing the threshold.
//!
//! It is a node of its own on a DDS participant of its own (ros2-client; the bridge's r2r
//! backend is not offered here) and shares nothing with a control loop.

use super::{setting, RosJobError, INTERRUPT};
use reflex_classifier::classifier_stage::Streak;
use reflex_classifier::Classifier;
use reflex_ros::camera::CameraFeed;
use reflex_ros::msg::{Bool, Float64, Image};
use reflex_ros::params::CameraParams;
use reflex_ros::{advertise, qos_service, qos_stream, subscribe, Reader, RosArgs};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The detector's ROS parameters (`-p name:=value` or its node's section of a parameter file).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectParams {
    /// `image_topic` (default `/front/color/image_raw`): the camera the classifier was trained
    /// on, `sensor_msgs/Image` in `rgb8` or `bgr8`.
    pub image_topic: String,
    /// `success_topic` (default `/reflex/success`): `std_msgs/Bool`, `true` once per success;
    /// the bridge's `success_topic` parameter names the same topic.
    pub success_topic: String,
    /// `probability_topic` (default `/reflex/success_probability`; empty: none):
    /// `std_msgs/Float64`, every verdict's probability.
    pub probability_topic: String,
    /// `threshold` (default: the classifier's own, from its `classifier.json`).
    pub threshold: Option<f32>,
    /// `end_after` (default 4): verdicts in a row at or above the threshold that declare a
    /// success. On pick_cube's front camera, ending training episodes on one verdict made 39-59%
    /// of the ends false; four in a row, 15-16% (the README's classifier figures).
    pub end_after: usize,
    /// `max_gap_s` (s, default 0.5): a longer gap between judged images breaks the run.
    pub max_gap_s: f64,
    /// `domain_id` (default: `ROS_DOMAIN_ID`, else 0).
    pub domain_id: u16,
    /// `localhost_only` (default true): the DDS participant uses loopback only.
    pub localhost_only: bool,
}

impl DetectParams {
    /// Reads the parameters from `r` (unknown ones are left for [`Reader::finish`]).
    pub fn read(r: &mut Reader) -> Result<Self, reflex_ros::ParamError> {
        let env_domain = std::env::var("ROS_DOMAIN_ID")
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(0);
        let threshold = if r.is_set("threshold") {
            Some(r.double("threshold", 0.5, 0.0, 1.0)? as f32)
        } else {
            None
        };
        Ok(Self {
            image_topic: r.string("image_topic", "/front/color/image_raw")?,
            success_topic: r.string("success_topic", "/reflex/success")?,
            probability_topic: r.string("probability_topic", "/reflex/success_probability")?,
            threshold,
            end_after: r.integer("end_after", 4, 1, 1000)? as usize,
            max_gap_s: r.double("max_gap_s", 0.5, 0.0, 3600.0)?,
            domain_id: r.integer("domain_id", env_domain, 0, 232)? as u16,
            localhost_only: r.bool("localhost_only", true)?,
        })
    }
}

/// `reflex ros detect`: what to run.
#[derive(Clone, Debug)]
pub struct DetectSpec {
    /// The classifier's directory (`classifier.safetensors` and `classifier.json`).
    pub classifier: PathBuf,
    /// Stop after this many seconds (None: until interrupted).
    pub seconds: Option<f64>,
    /// The ROS arguments (`-r __node:=`, `-r` remaps, `-p`, `--params-file`).
    pub ros: RosArgs,
}

/// What the detector did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DetectReport {
    /// The classifier's task.
    pub task: String,
    /// The threshold the verdicts were taken at.
    pub threshold: f32,
    /// Verdicts in a row that declared a success.
    pub end_after: usize,
    /// Images received.
    pub images: u64,
    /// Images judged.
    pub judged: u64,
    /// Images that a newer one replaced before the classifier was free.
    pub superseded: u64,
    /// Images refused (an encoding other than rgb8 or bgr8, a short buffer, an empty image)
    /// and messages that did not decode (not counted in `images`); the first reason is logged.
    pub refused: u64,
    /// Judged images at or above the threshold.
    pub positive: u64,
    /// Successes published on the success topic.
    pub successes: u64,
    /// Mean time to judge one image (resample and classify), ms.
    pub judge_ms_mean: f64,
    /// Longest time to judge one image, ms.
    pub judge_ms_max: f64,
}

/// The rule that turns a stream of verdicts into success declarations: `end_after` verdicts
/// in a row at or above the threshold declare one success, and the next is declared only
/// after a verdict below it. A verdict that does not follow the last one closely (a gap in
/// the camera) starts a new run; a NaN probability is a "no".
#[derive(Clone, Copy, Debug)]
pub struct SuccessEdge {
    streak: Streak,
    threshold: f32,
    index: u64,
    fired: bool,
}

impl SuccessEdge {
    /// A rule asking for `end_after` (at least 1) verdicts in a row at `threshold`.
    pub fn new(end_after: usize, threshold: f32) -> Self {
        Self {
            streak: Streak::new(end_after, threshold),
            threshold,
            index: 0,
            fired: false,
        }
    }

    /// Takes the verdict `p`; `follows` is false when it comes after a gap. True when a
    /// success is to be declared now.
    pub fn take(&mut self, p: f32, follows: bool) -> bool {
        self.index += if follows { 1 } else { 2 };
        let done = self.streak.take(0, self.index, p);
        // A "no" re-arms it; NaN is a "no".
        let yes = p >= self.threshold;
        if !yes {
            self.fired = false;
        }
        if done && !self.fired {
            self.fired = true;
            return true;
        }
        false
    }
}

/// Runs the detector until `spec.seconds` pass, `stop` is raised or the process is
/// interrupted.
pub fn detect(spec: &DetectSpec, stop: &AtomicBool) -> Result<DetectReport, RosJobError> {
    let name = spec
        .ros
        .node_name
        .clone()
        .unwrap_or_else(|| "reflex_success_detector".into());
    let namespace = spec.ros.namespace.clone().unwrap_or_else(|| "/".into());
    let fq = format!("{}/{}", namespace.trim_end_matches('/'), name);
    let mut r = Reader::new(spec.ros.parameters(&fq).map_err(setting)?);
    let mut params = DetectParams::read(&mut r).map_err(setting)?;
    r.finish().map_err(setting)?;
    for t in [
        &mut params.image_topic,
        &mut params.success_topic,
        &mut params.probability_topic,
    ] {
        *t = spec.ros.remap(t).to_owned();
    }
    let classifier =
        Classifier::load(&spec.classifier).map_err(|e| setting(format!("--classifier: {e}")))?;
    let threshold = params.threshold.unwrap_or(classifier.meta.threshold);
    let size = classifier.meta.size;

    let ctx = reflex_ros::participant(params.domain_id, params.localhost_only)?;
    let mut node = reflex_ros::node(&ctx, &namespace, &name)?;
    let images = subscribe::<Image>(&mut node, &params.image_topic, qos_stream())?;
    let success_pub = advertise::<Bool>(&mut node, &params.success_topic, qos_service())?;
    let probability_pub = match params.probability_topic.as_str() {
        "" => None,
        topic => Some(advertise::<Float64>(&mut node, topic, qos_service())?),
    };
    tracing::info!(
        "success detector `{fq}`: classifier {} ({}, {size}x{size}, threshold {threshold}, {} in a row) on `{}`, successes to `{}`",
        spec.classifier.display(),
        classifier.meta.task,
        params.end_after,
        params.image_topic,
        params.success_topic,
    );

    let feed_params = CameraParams {
        name: params.image_topic.clone(),
        image_topic: params.image_topic.clone(),
        depth_topic: String::new(),
        info_topic: String::new(),
        pose_in_base: None,
        max_age_s: f64::INFINITY,
    };
    let mut feed = CameraFeed::new(feed_params);
    let mut rgb = vec![0u8; size * size * 3];
    let mut input = vec![0f32; 3 * size * size];
    let mut edge = SuccessEdge::new(params.end_after, threshold);
    let mut report = DetectReport {
        task: classifier.meta.task.clone(),
        threshold,
        end_after: params.end_after,
        ..Default::default()
    };
    let mut judge_s_total = 0.0;
    let mut last_judged: Option<Instant> = None;
    let end = spec
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut refused_logged = false;
    while !stop.load(Ordering::Relaxed)
        && !INTERRUPT.load(Ordering::Relaxed)
        && end.is_none_or(|e| Instant::now() < e)
    {
        // The newest image; older ones that waited are superseded.
        let mut newest = None;
        for _ in 0..1024 {
            match images.take() {
                Ok(Some((img, _))) => {
                    report.images += 1;
                    if newest.replace(img).is_some() {
                        report.superseded += 1;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    report.refused += 1;
                    if !refused_logged {
                        refused_logged = true;
                        tracing::warn!("`{}`: undecodable image: {e:?}", params.image_topic);
                    }
                }
            }
        }
        let Some(img) = newest else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let started = Instant::now();
        feed.rgb = Some((img, 0));
        if let Err(e) = feed.colour(&mut rgb, size, size, 0) {
            report.refused += 1;
            if !refused_logged {
                refused_logged = true;
                tracing::warn!("`{}`: image refused: {e}", params.image_topic);
            }
            continue;
        }
        reflex_classifier::rgb_tensor_layout(&rgb, &mut input);
        let p = classifier
            .probabilities(&input)
            .map_err(|e| setting(format!("classifier: {e}")))?
            .first()
            .copied()
            .unwrap_or(f32::NAN);
        let follows = last_judged
            .is_some_and(|t| started.duration_since(t).as_secs_f64() <= params.max_gap_s);
        last_judged = Some(started);
        report.judged += 1;
        if p >= threshold {
            report.positive += 1;
        }
        if let Some(pp) = &probability_pub {
            let _ = pp.publish(Float64 { data: f64::from(p) });
        }
        if edge.take(p, follows) {
            report.successes += 1;
            tracing::info!("success declared (p {p:.3}, {} so far)", report.successes);
            if let Err(e) = success_pub.publish(Bool { data: true }) {
                tracing::warn!("`{}`: publish failed: {e:?}", params.success_topic);
            }
        }
        let took = started.elapsed().as_secs_f64() * 1e3;
        judge_s_total += took;
        report.judge_ms_max = report.judge_ms_max.max(took);
    }
    if report.judged > 0 {
        report.judge_ms_mean = judge_s_total / report.judged as f64;
    }
    // The node leaves the participant before the participant goes.
    drop((images, success_pub, probability_pub, node));
    drop(ctx);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_is_declared_once_per_run_of_verdicts_and_again_only_after_a_no() {
        let mut e = SuccessEdge::new(2, 0.5);
        let run = |e: &mut SuccessEdge, ps: &[(f32, bool)]| -> Vec<bool> {
            ps.iter().map(|&(p, f)| e.take(p, f)).collect()
        };
        // Two in a row declare; the run going on declares nothing more.
        assert_eq!(
            run(
                &mut e,
                &[(0.2, false), (0.6, true), (0.9, true), (0.9, true)]
            ),
            [false, false, true, false]
        );
        // A gap does not re-arm it: the same scene after a camera hiccup.
        assert_eq!(run(&mut e, &[(0.9, false), (0.9, true)]), [false, false]);
        // A "no" re-arms it; a NaN is a "no" and breaks the run.
        assert_eq!(
            run(
                &mut e,
                &[
                    (0.1, true),
                    (0.7, true),
                    (f32::NAN, true),
                    (0.7, true),
                    (0.5, true)
                ]
            ),
            [false, false, false, false, true]
        );
        // A gap inside a run starts it again.
        assert_eq!(
            run(
                &mut e,
                &[(0.0, true), (0.8, true), (0.8, false), (0.8, true)]
            ),
            [false, false, false, true]
        );
        // One verdict is enough at end_after 1.
        let mut one = SuccessEdge::new(1, 0.5);
        assert_eq!(
            run(&mut one, &[(0.5, false), (0.4, true), (0.6, true)]),
            [true, false, true]
        );
    }

    #[test]
    fn the_parameters_are_read_with_defaults_and_refused_naming_themselves() {
        let args = |ps: &[&str]| {
            let mut v = vec!["--ros-args".to_owned()];
            for p in ps {
                v.extend(["-p".to_owned(), (*p).to_owned()]);
            }
            RosArgs::parse(&v).unwrap()
        };
        let read = |a: &RosArgs| {
            let mut r = Reader::new(a.parameters("/reflex_success_detector").unwrap());
            let p = DetectParams::read(&mut r);
            p.and_then(|p| r.finish().map(|_| p))
        };
        let p = read(&args(&[])).unwrap();
        assert_eq!(p.image_topic, "/front/color/image_raw");
        assert_eq!(p.success_topic, "/reflex/success");
        assert_eq!(
            (p.threshold, p.end_after, p.localhost_only),
            (None, 4, true)
        );
        let p = read(&args(&[
            "threshold:=0.8",
            "end_after:=3",
            "probability_topic:=''",
        ]))
        .unwrap();
        assert_eq!((p.threshold, p.end_after), (Some(0.8), 3));
        assert_eq!(p.probability_topic, "");
        let e = read(&args(&["threshold:=1.5"])).unwrap_err().to_string();
        assert!(e.contains("threshold") && e.contains("1.5"), "{e}");
        let e = read(&args(&["end_after:=0"])).unwrap_err().to_string();
        assert!(e.contains("end_after"), "{e}");
        let e = read(&args(&["image_topc:=/x"])).unwrap_err().to_string();
        assert!(e.contains("image_topc"), "{e}");
        // The launch files' parameter file reads whole, and says what the defaults say.
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../launch/config/success_detector.yaml");
        let p = read(&RosArgs::parse(&["--params-file", file.to_str().unwrap()]).unwrap()).unwrap();
        assert_eq!(p, read(&args(&[])).unwrap());
    }
}
