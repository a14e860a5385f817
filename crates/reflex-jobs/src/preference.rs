//! `reflex preference`: learn a reward model from a judge's preferences between simulated
//! camera frames and measure how well it ranks held-out frames by true task progress.
//!
//! Frames come from the scripted expert driven with a different amount of action noise in
//! each episode (so some episodes finish the task and some stall part-way). Each kept step
//! is rendered; its true progress is the task's own shaped reward at that step. Pairs of
//! frames go to the judge (a VLM, or the oracle server, which answers from the true
//! progress sent alongside) through the VLM client; the answers train the Bradley-Terry
//! ensemble in rounds, and after each round the ensemble's reward is compared with true
//! progress on frames from other episodes (Spearman's rank correlation).
//!
//! The model reads either the state behind each frame (the flat observation: an ensemble of
//! small MLPs) or the frame itself (`input = "frames"`: a small CNN on a square render of the
//! same camera, as RL-VLM-F learns it; `reflex_classifier::frame_reward`).

use reflex_classifier::frame_reward::{FramePair, FrameRewardConfig, FrameRewardModel};
use reflex_core::{Frame, Rng};
use reflex_reward::parse::Preference;
use reflex_reward::preference::{spearman, LabelledPair, PreferenceConfig, PreferenceModel};
use reflex_reward::vlm::{Answer, Png, Query, Request, VlmClient, VlmCounters};
use reflex_sim::{noisy_expert_episodes, Camera, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a preference run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceRunConfig {
    /// Task name or file.
    pub task: String,
    /// Episodes whose frames are labelled.
    pub episodes: usize,
    /// Episodes whose frames only test the model.
    pub heldout_episodes: usize,
    /// Keep every this many steps as a frame.
    pub every: usize,
    /// Labels to ask for, at most.
    pub labels: usize,
    /// Rounds the labels are asked in (the model trains after each).
    pub rounds: usize,
    /// Seed of episodes, noise, pairs and networks.
    pub seed: u64,
    /// Frame size, pixels.
    pub width: usize,
    /// Frame size, pixels.
    pub height: usize,
    /// Wall-clock limit on waiting for answers in one round, seconds.
    pub round_timeout_s: f64,
    /// The reward model on states.
    pub model: PreferenceConfig,
    /// What the reward model reads: `state` (the flat observation) or `frames` (the image).
    pub input: ModelInput,
    /// The reward model on frames.
    pub frames_model: FrameRewardConfig,
}

/// What a preference reward model reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelInput {
    /// The state behind the frame (an MLP ensemble).
    #[default]
    State,
    /// The frame (a CNN).
    Frames,
}

impl std::str::FromStr for ModelInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "state" => Ok(Self::State),
            "frames" => Ok(Self::Frames),
            _ => Err(format!("`{s}`: the model reads `state` or `frames`")),
        }
    }
}

impl Default for PreferenceRunConfig {
    fn default() -> Self {
        Self {
            task: "pick_cube".into(),
            episodes: 40,
            heldout_episodes: 10,
            every: 4,
            labels: 2000,
            rounds: 4,
            seed: 0,
            width: 160,
            height: 120,
            round_timeout_s: 600.0,
            model: PreferenceConfig::default(),
            input: ModelInput::State,
            frames_model: FrameRewardConfig::default(),
        }
    }
}

/// One round's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Usable labels so far.
    pub labels: usize,
    /// Mean Bradley-Terry loss of the round's last steps.
    pub loss: f32,
    /// Spearman correlation with true progress on held-out frames.
    pub spearman_heldout: f64,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferenceReport {
    /// Task.
    pub task: String,
    /// What the model read.
    pub input: ModelInput,
    /// Frames labelled pairs were drawn from.
    pub frames: usize,
    /// Held-out frames.
    pub heldout_frames: usize,
    /// Pairs asked.
    pub asked: usize,
    /// Usable labels.
    pub labels: usize,
    /// Answers that were "cannot tell".
    pub unsure: usize,
    /// Questions without a usable answer (errors, garbage, timeouts).
    pub failed: usize,
    /// Labels that disagree with true progress (the judge's mistakes).
    pub wrong_labels: usize,
    /// Spearman correlation with true progress on the labelled frames.
    pub spearman_train: f64,
    /// Spearman correlation with true progress on held-out frames, after the last round.
    pub spearman_heldout: f64,
    /// Each round.
    pub rounds: Vec<Round>,
    /// The VLM client's counters.
    pub vlm: VlmCounters,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

struct Frames {
    features: Vec<f32>,
    progress: Vec<f64>,
    images: Vec<Arc<Png>>,
    dim: usize,
    /// With `input = frames`: each frame rendered square at the CNN's size, in its layout.
    cnn: Vec<f32>,
}

impl Frames {
    fn len(&self) -> usize {
        self.progress.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// Runs the noisy expert for `episodes` episodes from `first_seed` and keeps every
/// `every`-th step: flat observation, true progress and the rendered frame.
fn collect(
    task: &Task,
    cfg: &PreferenceRunConfig,
    first_seed: u64,
    episodes: usize,
    rng: &mut Rng,
) -> Result<Frames, String> {
    let camera = Camera::front(cfg.width, cfg.height);
    let mut frame = Frame::new(cfg.width, cfg.height);
    let side = cfg.frames_model.size;
    let (square, mut small) = (Camera::front(side, side), Frame::new(side, side));
    let mut out = Frames {
        features: Vec::new(),
        progress: Vec::new(),
        images: Vec::new(),
        dim: 0,
        cnn: Vec::new(),
    };
    let mut k = 0usize;
    let mut current = usize::MAX;
    noisy_expert_episodes(task, episodes, first_seed, rng, |ep, env, step| {
        if ep != current {
            current = ep;
            k = 0;
        }
        out.dim = step.obs.flat.len();
        if k.is_multiple_of(cfg.every) || step.info.success {
            env.render(&camera, &mut frame, false);
            let png = Png::encode_rgb(frame.width, frame.height, &frame.rgb)
                .map_err(|e| e.to_string())?;
            out.features.extend_from_slice(step.obs.flat.as_slice());
            out.progress.push(step.reward);
            out.images.push(Arc::new(png));
            if cfg.input == ModelInput::Frames {
                env.render(&square, &mut small, false);
                reflex_classifier::image_tensor_layout(&small, &mut out.cnn);
            }
        }
        k += 1;
        Ok(!(step.terminated || step.truncated))
    })?;
    Ok(out)
}

/// Learns a preference reward model from at most `cfg.labels` judgements by `client` and
/// reports how well it ranks held-out frames. `progress` is told each finished round.
pub fn run_preference(
    cfg: &PreferenceRunConfig,
    client: &VlmClient,
    mut progress: impl FnMut(&Round),
) -> Result<PreferenceReport, String> {
    if cfg.labels == 0 || cfg.rounds == 0 || cfg.episodes == 0 || cfg.heldout_episodes == 0 {
        return Err("labels, rounds, episodes and heldout_episodes must be positive".into());
    }
    if cfg.every == 0 {
        return Err("every must be positive".into());
    }
    let started = Instant::now();
    let task = Task::load(&cfg.task).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(cfg.seed ^ 0x9E5F);
    let seed0 = cfg.seed.wrapping_mul(1_000_003);
    let train = collect(&task, cfg, seed0, cfg.episodes, &mut rng)?;
    let test = collect(
        &task,
        cfg,
        seed0 + cfg.episodes as u64 + 7,
        cfg.heldout_episodes,
        &mut rng,
    )?;
    if train.len() < 2 || test.len() < 2 {
        return Err("too few frames collected".into());
    }
    let mut model = PreferenceModel::new(cfg.model.clone(), train.dim, cfg.seed);
    model.fit_inputs(&train.features);
    let mut cnn = match cfg.input {
        ModelInput::State => None,
        ModelInput::Frames => Some(FrameRewardModel::new(cfg.frames_model.clone(), cfg.seed)?),
    };
    let mut frame_pairs: Vec<FramePair> = Vec::new();
    let mut pairs: Vec<LabelledPair> = Vec::new();
    let mut asked_pairs: Vec<(usize, usize)> = Vec::new();
    let (mut unsure, mut failed, mut wrong) = (0, 0, 0);
    let mut rounds = Vec::new();
    for round in 0..cfg.rounds {
        let target = cfg.labels * (round + 1) / cfg.rounds;
        let deadline = Instant::now() + Duration::from_secs_f64(cfg.round_timeout_s);
        let mut in_flight = 0usize;
        while (asked_pairs.len() < target || in_flight > 0) && Instant::now() < deadline {
            // Ask while there is room in the client's queue; never block on it.
            while asked_pairs.len() < target {
                let i = (rng.next_u64() % train.len() as u64) as usize;
                let j = (rng.next_u64() % train.len() as u64) as usize;
                if i == j {
                    continue;
                }
                let req = Request {
                    id: asked_pairs.len() as u64,
                    query: Query::Preference {
                        first: train.images[i].clone(),
                        second: train.images[j].clone(),
                        instruction: task.instruction.clone(),
                    },
                    hint: Some(serde_json::json!({
                        "progress": [train.progress[i], train.progress[j]]
                    })),
                };
                if client.submit(req).is_err() {
                    break;
                }
                asked_pairs.push((i, j));
                in_flight += 1;
            }
            let Some(reply) = client.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            in_flight = in_flight.saturating_sub(1);
            let Some(&(i, j)) = asked_pairs.get(reply.id as usize) else {
                failed += 1;
                continue;
            };
            match reply.result {
                Ok(Answer::Preference(label)) => {
                    let truth = train.progress[i].total_cmp(&train.progress[j]);
                    let agrees = match label {
                        Preference::First => truth.is_gt(),
                        Preference::Second => truth.is_lt(),
                    };
                    if !agrees {
                        wrong += 1;
                    }
                    pairs.push(LabelledPair {
                        a: train.row(i).to_vec(),
                        b: train.row(j).to_vec(),
                        label,
                    });
                    frame_pairs.push(FramePair {
                        a: i,
                        b: j,
                        first_better: label == Preference::First,
                    });
                }
                Ok(_) => failed += 1,
                Err(reflex_reward::vlm::VlmError::Parse(
                    reflex_reward::parse::ParseError::Unsure,
                )) => unsure += 1,
                Err(_) => failed += 1,
            }
        }
        if in_flight > 0 {
            tracing::warn!(
                in_flight,
                "round {round}: answers still missing at the time limit"
            );
            failed += in_flight;
        }
        let (loss, spearman_heldout) = match &mut cnn {
            Some(c) => (
                c.train(&train.cnn, &frame_pairs),
                cnn_rank_quality(c, &test),
            ),
            None => {
                let loss = model.train(&pairs);
                model.calibrate(&train.features);
                (loss, rank_quality(&mut model, &test))
            }
        };
        let r = Round {
            labels: pairs.len(),
            loss,
            spearman_heldout,
        };
        progress(&r);
        rounds.push(r);
    }
    let spearman_train = match &cnn {
        Some(c) => cnn_rank_quality(c, &train),
        None => rank_quality(&mut model, &train),
    };
    Ok(PreferenceReport {
        task: cfg.task.clone(),
        input: cfg.input,
        frames: train.len(),
        heldout_frames: test.len(),
        asked: asked_pairs.len(),
        labels: pairs.len(),
        unsure,
        failed,
        wrong_labels: wrong,
        spearman_train,
        spearman_heldout: rounds.last().map_or(f64::NAN, |r| r.spearman_heldout),
        rounds,
        vlm: client.stats(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn rank_quality(model: &mut PreferenceModel, frames: &Frames) -> f64 {
    let r: Vec<f64> = model
        .reward(&frames.features)
        .into_iter()
        .map(f64::from)
        .collect();
    spearman(&r, &frames.progress)
}

fn cnn_rank_quality(model: &FrameRewardModel, frames: &Frames) -> f64 {
    let r: Vec<f64> = model
        .rewards(&frames.cnn)
        .into_iter()
        .map(f64::from)
        .collect();
    spearman(&r, &frames.progress)
}
