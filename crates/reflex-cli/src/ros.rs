//! `reflex ros`: the ROS 2 commands. Arguments and reports only; the jobs are
//! `reflex_jobs::ros`. Each takes the ROS 2 arguments a launch file appends
//! (`--ros-args -r __node:=NAME -r __ns:=NS -p name:=value --params-file FILE`) after its own.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reflex_jobs::ros::{RosRunSpec, SimArmSpec};
use reflex_ros::RosArgs;
use reflex_sim::Task;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// `reflex ros ...`.
#[derive(Subcommand)]
pub enum RosCommand {
    /// Serve the simulated arm as a ros2_control robot: `/joint_states`, forward position
    /// controllers for the arm and gripper, object poses on `/tf`, and (simulation only)
    /// `/reflex_sim/reset` and `/reflex_sim/privileged_success`.
    SimArm(SimArmArgs),
    /// Drive a ros2_control arm through the bridge with a policy, episode after episode.
    Run(RosRunArgs),
    /// Train the residual on a ros2_control arm through the bridge: scripted demonstrations,
    /// behaviour cloning, then SAC in real time, evaluating as it goes (`reflex train`'s job;
    /// the task's reward is judged over the tracked objects).
    Train(RosTrainArgs),
    /// A success detector node: a success classifier (`reflex classifier train`) on a camera's
    /// image topic publishes `true` on the success topic (the bridge's `success_topic`) when it
    /// sees the task done, `end_after` verdicts in a row, once per success; every verdict's
    /// probability goes to `probability_topic`. Parameters (`-p`): image_topic, success_topic,
    /// probability_topic, threshold, end_after, max_gap_s, domain_id, localhost_only.
    Detect(DetectArgs),
}

/// Arguments of `reflex ros detect`.
#[derive(Args)]
pub struct DetectArgs {
    /// The classifier's directory (`classifier.safetensors`, `classifier.json`).
    #[arg(long)]
    classifier: PathBuf,
    /// The node's parameter file (`node: ros__parameters:` form); same as
    /// `--ros-args --params-file FILE`.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Stop after this many seconds (default: until SIGTERM or Ctrl-C).
    #[arg(long)]
    seconds: Option<f64>,
    /// Print the report as a JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex ros train`: those of `reflex train`, and the bridge's.
#[derive(Args)]
pub struct RosTrainArgs {
    /// The bridge's parameter file (`node: ros__parameters:` form); same as
    /// `--ros-args --params-file FILE`.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Control loop rate, Hz [default: the config file's `runtime.servo_rate_hz`, 500].
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    train: crate::train::TrainArgs,
}

/// Arguments of `reflex ros sim-arm`.
#[derive(Args)]
pub struct SimArmArgs {
    /// Task name (from sim/tasks) or task file.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Control rate: joint states published and commands applied, Hz.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seed of the first scene; each reset takes the next.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Object poses on `/tf` are published at this rate, Hz (a tracker's rate).
    #[arg(long, default_value_t = 100.0)]
    scene_rate: f64,
    /// Camera images (`front`, `wrist`) are published at this rate, Hz (0: none).
    #[arg(long, default_value_t = 10.0)]
    camera_rate: f64,
    /// Camera images are this many pixels square.
    #[arg(long, default_value_t = 128)]
    camera_size: usize,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long)]
    seconds: Option<f64>,
}

/// Arguments of `reflex ros run`.
#[derive(Args)]
pub struct RosRunArgs {
    /// The bridge's parameter file (`node: ros__parameters:` form); same as
    /// `--ros-args --params-file FILE`.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Task name (from sim/tasks) or task file: rates, action space, limits and the scene's
    /// objects and keypoints.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Base policy: `scripted` or a policy file. A pixel run's `base.safetensors` (with
    /// `base_encoder.safetensors` beside it) sees the bridge's camera topics instead of the
    /// tracked objects; its cameras must be in the bridge's `cameras` parameter.
    #[arg(long, default_value = "scripted")]
    policy: String,
    /// Residual policy file (its scale is taken from the file; empty: none, which is what a
    /// launch file passes by default). With a pixel base, the same run's `policy.safetensors`.
    #[arg(long)]
    residual: Option<String>,
    /// Control loop rate, Hz.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Stop after this many completed episodes (0: no limit).
    #[arg(long, default_value_t = 0)]
    episodes: usize,
    /// Stop after this many seconds (default: until SIGTERM or Ctrl-C, which brake the arm to
    /// rest first).
    #[arg(long)]
    seconds: Option<f64>,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(what: &RosCommand, ros_args: &[String]) -> Result<()> {
    let mut ros = RosArgs::parse(ros_args)?;
    crate::stop_on_signals();
    match what {
        RosCommand::Train(a) => {
            if let Some(p) = &a.params {
                ros.params_files.insert(0, p.clone());
            }
            crate::train::run_job(&a.train, Some("ros-"), |cfg, out, plugin, progress| {
                let mut cfg = cfg.clone();
                if let Some(r) = a.rate {
                    cfg.runtime.servo_rate_hz = r;
                }
                reflex_jobs::ros::ros_train(&cfg, &ros, out, a.train.resume, plugin, progress)
            })
        }
        RosCommand::Detect(a) => {
            if let Some(p) = &a.params {
                ros.params_files.insert(0, p.clone());
            }
            let spec = reflex_jobs::ros::detect::DetectSpec {
                classifier: a.classifier.clone(),
                seconds: a.seconds,
                ros,
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let r = reflex_jobs::ros::detect::detect(&spec, &stop)?;
            println!(
                "success detector ({}): {} images, {} judged ({} superseded, {} refused), {} at or above {:.2}, {} successes declared ({} in a row); {:.1} ms per image (max {:.1})",
                r.task,
                r.images,
                r.judged,
                r.superseded,
                r.refused,
                r.positive,
                r.threshold,
                r.successes,
                r.end_after,
                r.judge_ms_mean,
                r.judge_ms_max,
            );
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
        RosCommand::SimArm(a) => {
            let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
            let spec = SimArmSpec {
                task,
                rate_hz: a.rate,
                seed: a.seed,
                scene_rate_hz: a.scene_rate,
                camera_rate_hz: a.camera_rate,
                camera_size: a.camera_size,
                seconds: a.seconds,
                ros,
            };
            let stats = reflex_jobs::ros::sim_arm(&spec)?;
            println!(
                "sim arm: {} periods, {} commands applied, {} dropped, {} resets, {} overruns",
                stats.ticks.load(Ordering::Relaxed),
                stats.commands.load(Ordering::Relaxed),
                stats.dropped.load(Ordering::Relaxed),
                stats.resets.load(Ordering::Relaxed),
                stats.overruns.load(Ordering::Relaxed),
            );
            Ok(())
        }
        RosCommand::Run(a) => {
            if let Some(p) = &a.params {
                ros.params_files.insert(0, p.clone());
            }
            let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
            let spec = RosRunSpec {
                task,
                policy: a.policy.clone(),
                residual: a
                    .residual
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                servo_rate_hz: a.rate,
                episodes: a.episodes,
                seconds: a.seconds,
                ros,
            };
            let r = reflex_jobs::ros::ros_run(&spec)?;
            let n = r.episodes.len();
            let wins = r.episodes.iter().filter(|s| **s).count();
            let t = &r.stats.timing;
            let b = &r.bridge;
            let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            println!(
                "{} over ROS 2: {wins}/{n} episodes succeeded ({:.0}%) at {} Hz; {} ticks, {} deadline misses, jitter p99 {:.0} us",
                spec.task.name,
                if n > 0 { 100.0 * wins as f64 / n as f64 } else { 0.0 },
                a.rate,
                ld(&t.ticks),
                ld(&t.deadline_misses),
                t.jitter.quantile_ns(0.99) as f64 / 1e3,
            );
            println!(
                "bridge: {} joint states, {} superseded, {} stale reads, {} refused (missing joint {}, bad length {}, out of order {}), {} non-finite; {} commands sent, {} failed; {} object updates; came to rest: {}",
                ld(&b.states),
                ld(&b.states_superseded),
                ld(&b.stale_reads),
                ld(&b.states_missing_joint) + ld(&b.states_bad_length) + ld(&b.states_out_of_order),
                ld(&b.states_missing_joint),
                ld(&b.states_bad_length),
                ld(&b.states_out_of_order),
                ld(&b.states_non_finite),
                ld(&b.commands),
                ld(&b.command_failures),
                ld(&b.object_updates),
                r.rested,
            );
            if let Some((published, refused)) = r.camera_stacks {
                println!(
                    "pixel policy: {published} camera stacks published, {refused} polls without a fresh picture from every camera; {} policy steps held for a stale picture",
                    ld(&r.stats.stale_policy_inputs),
                );
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "task": spec.task.name,
                        "episodes": n,
                        "successes": wins,
                        "success_rate": if n > 0 { wins as f64 / n as f64 } else { 0.0 },
                        "servo_rate_hz": a.rate,
                        "ticks": ld(&t.ticks),
                        "deadline_misses": ld(&t.deadline_misses),
                        "jitter_p99_us": t.jitter.quantile_ns(0.99) as f64 / 1e3,
                        "joint_states": ld(&b.states),
                        "stale_reads": ld(&b.stale_reads),
                        "commands": ld(&b.commands),
                        "rested": r.rested,
                        "stale_policy_inputs": ld(&r.stats.stale_policy_inputs),
                        "camera_stacks_published": r.camera_stacks.map(|c| c.0),
                        "camera_polls_refused": r.camera_stacks.map(|c| c.1),
                    })
                );
            }
            Ok(())
        }
    }
}
