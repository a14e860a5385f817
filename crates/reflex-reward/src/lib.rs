//! # reflex-reward
//!
//! Where rewards come from when nobody wrote reward code: keypoints a vision-language model
//! proposed on a camera frame, or a model of the VLM's preferences between frames (the success
//! classifier is `reflex-classifier`); and how their terms fuse with the task's own.
//!
//! - [`parse`]: reading VLM answers (JSON in prose or code fences, grid cells, coordinate
//!   conventions, preference labels, yes/no) with errors that name the field.
//! - [`lift`]: a world point attached to the tracked object it lies on, so it moves with it
//!   (image point + depth -> world point is `reflex_core::Frame::lift`).
//! - [`keypoint`]: a keypoint plan turned into bounded dense terms.
//! - [`preference`]: the Bradley-Terry ensemble learned from preference labels, and Spearman's
//!   rank correlation to check it.
//! - [`preference_stage`]: `reflex train --reward vlm-preference`, the same model learned
//!   while training from frames of the training episodes, its potential reshaping the replay
//!   after each round of labels.
//! - [`fusion`]: weights, clipping, potential-based terms, success overriding dense shaping.
//! - [`prompts`]: the questions asked of a VLM.
//! - [`vlm`]: the OpenAI-compatible client on its own tokio thread (bounded queues, timeouts,
//!   retries with backoff, concurrency limit, disk cache, budget, counters; replies carry their
//!   request's id).
//! - [`oracle`]: the OpenAI-compatible server that answers the same prompts from simulator
//!   ground truth, with injected noise, latency, errors and garbage.
//! - [`annotate`]: the cell grid drawn on frames before they go to a VLM.
//! - [`keypoint_stage`]: keypoint rewards from the VLM client during `reflex train`, as a
//!   `reflex_learn::stage` plugin (asks at each reset, holds transitions until their episode's
//!   answer arrives, drops and counts what fails or expires).
//! - [`scene`]: the oracle's keypoint answer from the task's keypoints, and lifting any answer
//!   onto a captured scene through the frame's depth and the tracked objects (no segmentation).
//!
//! Seams: the world is seen only through `reflex_core::SceneView` (a camera frame, tracked
//! objects), so every source here runs on a real arm as on the simulator, and nothing here
//! depends on the simulator (`reflex preference`, which learns from simulated frames, is
//! `reflex_jobs::preference`). Networks are `reflex_learn::nn` nets; nothing here runs on the
//! control thread.

pub mod annotate;
pub mod fusion;
pub mod keypoint;
pub mod keypoint_stage;
pub mod lift;
pub mod oracle;
pub mod parse;
pub mod preference;
pub mod preference_stage;
pub mod prompts;
pub mod scene;
pub mod vlm;
