//! `reflex bench sim|policy|loop|learner|pendulum|train|pixels|...`: arguments and printing; the
//! benchmarks themselves are `reflex_jobs::bench`. Numbers, not assertions: run them on an idle
//! machine.

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reflex_jobs::bench::{self, learn, BenchReport};

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Physics, environment and vectorised-environment throughput.
    Sim(BenchSimArgs),
    /// One-sample policy latency: an MLP forward pass, and base + residual + safety filter.
    Policy(BenchPolicyArgs),
    /// The control loop at a fixed rate: deadline misses, wake-up jitter, compute time.
    Loop(BenchLoopArgs),
    /// Full SAC updates per second (batch 256, [256, 256] networks, both cores).
    Learner(BenchLearnerArgs),
    /// SAC on the pendulum: steps and seconds until the last 10 returns average above -200.
    Pendulum(BenchPendulumArgs),
    /// End-to-end environment steps and updates per second while training.
    Train(BenchTrainArgs),
    /// JointState-to-command round trips through the ROS 2 bridge (one runtime tick per
    /// state) beside an rclpy node's, timed by one rclpy peer on loopback.
    Ros(BenchRosArgs),
    /// Page-to-arm latency: a WebSocket client takes over a teleop session on the simulated
    /// arm; from each executed command's receipt to its first joint command leaving the
    /// safety filter.
    Teleop(BenchTeleopArgs),
    /// The serial link's frames: encode and decode rates, bytes per frame, baud for 1 kHz.
    Wire(BenchWireArgs),
    /// What seeing through cameras costs: the tick's image encoder and one training update of
    /// it, per image side.
    Pixels(BenchPixelsArgs),
    /// The serial link end to end: the firmware's core behind a pseudo-terminal, commanded at
    /// the loop rate; round trips, frames lost, the board's stop when the host goes silent.
    Serial(BenchSerialArgs),
    /// A learner's intake over Zenoh from 1, 2, 4 ... actor processes on loopback
    /// (transitions/s, learner CPU per transition, bandwidth per actor) and weights broadcast
    /// latency to every actor (build with `--features fleet`).
    #[cfg(feature = "fleet")]
    Fleet(BenchFleetArgs),
    /// One actor process of `reflex bench fleet` (started by it).
    #[cfg(feature = "fleet")]
    #[command(hide = true)]
    FleetActor(BenchFleetActorArgs),
}

/// Arguments of `reflex bench fleet`.
#[cfg(feature = "fleet")]
#[derive(Args)]
pub struct BenchFleetArgs {
    /// Task whose observation and action shapes are sent.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Actor process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    actors: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Transitions per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench fleet-actor`.
#[cfg(feature = "fleet")]
#[derive(Args)]
pub struct BenchFleetActorArgs {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    task: String,
    #[arg(long)]
    batch: usize,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    name: String,
}

/// Arguments of `reflex bench serial`.
#[derive(Args)]
pub struct BenchSerialArgs {
    /// Task whose arm is used.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Host command rate and board control rate, Hz.
    #[arg(long, default_value_t = 1000)]
    rate: u16,
    /// Seconds of commands.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The board's link watchdog, milliseconds.
    #[arg(long, default_value_t = 50)]
    watchdog_ms: u16,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench pixels`.
#[derive(Args)]
pub struct BenchPixelsArgs {
    /// Image sides to measure, pixels (square), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "48,64,84")]
    sides: Vec<usize>,
    /// Cameras stacked (wrist and front: 2).
    #[arg(long, default_value_t = 2)]
    cameras: usize,
    /// Images per training update.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Encoder forward passes to time at batch 1.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Training updates to time per side.
    #[arg(long, default_value_t = 5)]
    updates: usize,
    /// `gpu`: also time burn's update on the GPU (a build with `--features gpu`; the adapter is
    /// named, and a CPU rasteriser such as Mesa's lavapipe is reported as not a GPU).
    #[arg(long, default_value = "cpu")]
    device: reflex_learn::burn_device::BurnDevice,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench wire`.
#[derive(Args)]
pub struct BenchWireArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench teleop`.
#[derive(Args)]
pub struct BenchTeleopArgs {
    /// Task name or file.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Control-loop rate, Hz.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of operator input.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Input messages a second (the page sends 30).
    #[arg(long, default_value_t = 30.0)]
    input_hz: f64,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench ros`.
#[derive(Args)]
pub struct BenchRosArgs {
    /// Joint-state rates, Hz.
    #[arg(long, value_delimiter = ',', default_value = "500,1000")]
    rates: Vec<f64>,
    /// Seconds measured per candidate and rate (after 2 s of warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Python with rclpy (scripts/test.sh installs it).
    #[arg(long, default_value = "target/pyenv/bin/python")]
    python: std::path::PathBuf,
    /// DDS domain id.
    #[arg(long, default_value_t = 97)]
    domain_id: u16,
    /// The r2r candidate: a command that runs it (built by scripts/build-r2r-echo.sh)
    /// [default: scripts/r2r-echo.sh when target/release/r2r-echo exists].
    #[arg(long)]
    r2r_echo: Option<std::path::PathBuf>,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench loop`.
#[derive(Args)]
pub struct BenchLoopArgs {
    /// Control rate, Hz.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Duration, seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Meanwhile run a busy learner thread and real VLM traffic: keypoint questions on a
    /// rendered frame to an in-process oracle server over loopback HTTP, answered after 1 s,
    /// with the client's queue kept full.
    #[arg(long)]
    load: bool,
    /// Do not ask for SCHED_FIFO, mlockall and CPU pinning.
    #[arg(long)]
    no_realtime: bool,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench policy`.
#[derive(Args)]
pub struct BenchPolicyArgs {
    /// Forward passes to time.
    #[arg(long, default_value_t = 200_000)]
    samples: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench sim`.
#[derive(Args)]
pub struct BenchSimArgs {
    /// Task name or file.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Seconds to spend on each measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Camera resolution for the camera measurement, pixels (square).
    #[arg(long, default_value_t = 128)]
    frame_size: usize,
    /// Environments in the vectorised measurement (default: 4 per core).
    #[arg(long)]
    num_envs: Option<usize>,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench learner`.
#[derive(Args)]
pub struct BenchLearnerArgs {
    /// Seconds to time updates for.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Rows per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Hidden width (two hidden layers).
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Observation width.
    #[arg(long, default_value_t = 39)]
    obs: usize,
    /// Action width.
    #[arg(long, default_value_t = 7)]
    act: usize,
    /// Critics in the ensemble.
    #[arg(long, default_value_t = 2)]
    critics: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench pendulum`.
#[derive(Args)]
pub struct BenchPendulumArgs {
    /// Seeds to run (one run each).
    #[arg(long, default_value_t = 3)]
    runs: u64,
    /// Step budget per run.
    #[arg(long, default_value_t = 10_000)]
    max_steps: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `reflex bench train`.
#[derive(Args)]
pub struct BenchTrainArgs {
    /// Task.
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Update-to-data ratio.
    #[arg(long, default_value_t = 4.0)]
    utd: f32,
    /// Seconds of training.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// A progress callback drawing on `bar` (hidden until the first call, which sets its length).
fn bar_progress(bar: &ProgressBar) -> impl FnMut(u64, u64, String) + '_ {
    move |done, total, message| {
        if bar.is_hidden() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(message);
    }
}

pub fn run(cmd: &BenchCommand) -> Result<()> {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (report, json): (BenchReport, bool) = match cmd {
        BenchCommand::Sim(a) => (
            bench::bench_sim(&bench::BenchSimSpec {
                task: a.task.clone(),
                seconds: a.seconds,
                frame_size: a.frame_size,
                num_envs: a.num_envs,
            })?,
            a.json,
        ),
        BenchCommand::Policy(a) => (
            bench::bench_policy(&bench::BenchPolicySpec { samples: a.samples })?,
            a.json,
        ),
        BenchCommand::Loop(a) => (
            bench::bench_loop(
                &bench::BenchLoopSpec {
                    rate: a.rate,
                    seconds: a.seconds,
                    load: a.load,
                    no_realtime: a.no_realtime,
                },
                bar_progress(&bar),
            )?,
            a.json,
        ),
        BenchCommand::Learner(a) => (
            learn::bench_learner(&learn::BenchLearnerSpec {
                seconds: a.seconds,
                batch: a.batch,
                hidden: a.hidden,
                obs: a.obs,
                act: a.act,
                critics: a.critics,
            })?,
            a.json,
        ),
        BenchCommand::Pendulum(a) => (
            learn::bench_pendulum(
                &learn::BenchPendulumSpec {
                    runs: a.runs,
                    max_steps: a.max_steps,
                },
                bar_progress(&bar),
            )?,
            a.json,
        ),
        BenchCommand::Ros(a) => (
            bench::ros::ros(&bench::ros::BenchRosSpec {
                rates: a.rates.clone(),
                seconds: a.seconds,
                python: a.python.clone(),
                domain_id: a.domain_id,
                r2r_echo: a.r2r_echo.clone().or_else(|| {
                    std::path::Path::new("target/release/r2r-echo")
                        .exists()
                        .then(|| "scripts/r2r-echo.sh".into())
                }),
            })?,
            a.json,
        ),
        BenchCommand::Serial(a) => (
            bench::serial::serial(&bench::serial::BenchSerialSpec {
                task: a.task.clone(),
                rate_hz: a.rate,
                seconds: a.seconds,
                watchdog_ms: a.watchdog_ms,
            })?,
            a.json,
        ),
        #[cfg(feature = "fleet")]
        BenchCommand::Fleet(a) => (
            bench::fleet::fleet(&bench::fleet::BenchFleetSpec {
                task: a.task.clone(),
                actors: a.actors.clone(),
                seconds: a.seconds,
                batch: a.batch,
                exe: std::env::current_exe()?,
            })?,
            a.json,
        ),
        #[cfg(feature = "fleet")]
        BenchCommand::FleetActor(a) => {
            return bench::fleet::fleet_actor(&a.task, a.port, a.batch, a.seconds, &a.name);
        }
        BenchCommand::Pixels(a) => {
            let total = a.sides.len() as u64;
            let mut done = 0;
            let mut progress = bar_progress(&bar);
            (
                bench::pixels::pixels(
                    &bench::pixels::BenchPixelsSpec {
                        sides: a.sides.clone(),
                        cameras: a.cameras,
                        batch: a.batch,
                        samples: a.samples,
                        updates: a.updates,
                        device: a.device,
                    },
                    |side| {
                        progress(done, total, format!("{side}x{side}"));
                        done += 1;
                    },
                )?,
                a.json,
            )
        }
        BenchCommand::Wire(a) => (
            bench::wire::wire(&bench::wire::BenchWireSpec { seconds: a.seconds })?,
            a.json,
        ),
        BenchCommand::Teleop(a) => (
            bench::teleop::teleop(&bench::teleop::BenchTeleopSpec {
                task: a.task.clone(),
                servo_rate_hz: a.rate,
                seconds: a.seconds,
                input_hz: a.input_hz,
            })?,
            a.json,
        ),
        BenchCommand::Train(a) => (
            learn::bench_train(&learn::BenchTrainSpec {
                task: a.task.clone(),
                utd: a.utd,
                seconds: a.seconds,
            })?,
            a.json,
        ),
    };
    bar.finish_and_clear();
    for line in &report.lines {
        println!("{line}");
    }
    if json {
        println!("{}", report.json);
    }
    Ok(())
}
