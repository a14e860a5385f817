//! The `reflex` command: argument parsing, progress bars and reports. Every job it runs lives in
//! `reflex-jobs`; nothing here drives a robot or a learner itself.
//!
//! - `reflex train`: the main job, residual RL on a behaviour-cloned base in the simulator.
//! - `reflex eval`: success rate of a trained run (on the held-out seeds by default).
//! - `reflex study`: several seeds' runs read together (`reflex train --seeds` does it too).
//! - `reflex sim`: run a policy in the simulator and report its success rate.
//! - `reflex run`: the runtime's control loop driving the simulated arm (or, `--robot
//!   serial:PORT`, an arm on Reflex's firmware) in real time.
//! - `reflex firmware-sim`: the firmware's control core behind a pseudo-terminal with the
//!   simulated arm as its plant, and a simulated tracker on the scene link.
//! - `reflex teleop`: a correction session: the operator's page, takeover by holding a control.
//! - `reflex replay`: re-run a recorded session and check its trajectory hashes.
//! - `reflex export lerobot`: recorded sessions as a LeRobot dataset (the `lerobot` feature).
//! - `reflex vlm-oracle`: an OpenAI-compatible server answering Reflex's VLM prompts from
//!   simulator ground truth, with injectable noise, latency and faults.
//! - `reflex preference`: a preference reward model from a judge's labels, ranked on held-out
//!   frames.
//! - `reflex classifier train|eval`: the success classifier on simulated frames.
//! - `reflex ros sim-arm|run`: the simulator served as a ros2_control arm over ROS 2, and the
//!   runtime driving a ros2_control arm through the bridge.
//! - `reflex bench sim|policy|loop|learner|pendulum|train`: throughput, latency and learning figures.

mod bench;
mod classifier;
mod export;
mod firmware_sim;
#[cfg(feature = "fleet")]
mod fleet;
mod preference;
mod ros;
mod run;
mod sim;
mod teleop;
mod train;
mod vlm_oracle;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "reflex", version, about = "Robot arms that learn on the job")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a residual policy on a behaviour-cloned base: in the simulator (the main job) or on
    /// an arm on Reflex's firmware (--robot serial:PORT --scene HOST:PORT).
    Train(train::TrainCmd),
    /// Success rate of a trained run directory.
    Eval(train::EvalArgs),
    /// Several finished runs (one per seed) read together: mean and 95% bootstrap interval
    /// of their held-out success and time to the target (study.json), and a band plot.
    Study(train::StudyArgs),
    /// Run a policy in the simulator and report success.
    Sim(sim::SimArgs),
    /// Run the control loop against the simulator (or a serial arm) in real time; report
    /// success and timing.
    Run(run::RunArgs),
    /// Serve the firmware's control core on a pseudo-terminal with the simulated arm as its
    /// plant, and the scene's tracker and resets on a loopback UDP port.
    FirmwareSim(firmware_sim::FirmwareSimArgs),
    /// A correction session: the policy acts on the simulated arm (or, `--robot ros`, a
    /// ros2_control arm through the bridge) while an operator watches a web page (loopback,
    /// behind a random token) and takes over by holding a key or button.
    Teleop(teleop::TeleopArgs),
    /// Re-run a recorded teleop session in the simulator and check every episode's trajectory
    /// hash.
    Replay(teleop::ReplayArgs),
    /// Export recorded teleop sessions as a dataset (`reflex export lerobot`).
    Export(export::ExportArgs),
    /// Serve VLM answers from simulator ground truth (OpenAI-compatible), for tests and
    /// simulation.
    VlmOracle(vlm_oracle::OracleArgs),
    /// Learn a preference reward model from a judge's labels on simulated frames and report
    /// how well it ranks held-out frames by true progress.
    Preference(preference::PreferenceArgs),
    /// Train or evaluate the success classifier (a CNN on camera frames).
    Classifier {
        #[command(subcommand)]
        what: classifier::ClassifierCommand,
    },
    /// ROS 2: serve the simulated arm as a ros2_control robot, or drive an arm through the
    /// bridge. ROS 2 arguments (`--ros-args ...`) follow the command's own.
    Ros {
        #[command(subcommand)]
        what: ros::RosCommand,
    },
    /// The learner of a run over several processes or machines: takes actors' transitions
    /// over Zenoh, trains, publishes weights (build with `--features fleet`).
    #[cfg(feature = "fleet")]
    Learner(fleet::LearnerArgs),
    /// An actor of such a run: runs the control loop on its robots with the learner's newest
    /// weights and streams the transitions to it (build with `--features fleet`).
    #[cfg(feature = "fleet")]
    Actor(fleet::ActorArgs),
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // Zenoh's peer router warns at every actor's start that gossip is off (Reflex
                // turns it off: explicit endpoints only); nothing there is a region gateway.
                // wgpu (`--device gpu`) logs an error for each graphics API it probes and
                // does not find (EGL on a machine without a display) before it opens Vulkan.
                tracing_subscriber::EnvFilter::new(
                    "info,rustdds=error,ros2_client=error,zenoh::net::routing::hat::peer=error,\
                     wgpu_hal=off,wgpu_core=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // A launch file appends `--ros-args ...` after a node's own arguments: split them off
    // before clap sees them.
    let mut argv: Vec<String> = std::env::args().collect();
    let ros_args = match argv.iter().position(|a| a == "--ros-args") {
        Some(i) => argv.split_off(i),
        None => Vec::new(),
    };
    let cli = Cli::parse_from(&argv);
    #[cfg(feature = "fleet")]
    let takes_ros_args = matches!(
        cli.command,
        Command::Ros { .. } | Command::Teleop(_) | Command::Actor(_)
    );
    #[cfg(not(feature = "fleet"))]
    let takes_ros_args = matches!(cli.command, Command::Ros { .. } | Command::Teleop(_));
    if !ros_args.is_empty() && !takes_ros_args {
        anyhow::bail!(
            "--ros-args is only understood by `reflex ros ...`, `reflex teleop --robot ros` and \
             `reflex actor --robot ros`"
        );
    }
    match cli.command {
        Command::Train(args) => train::run_train(&args),
        Command::Eval(args) => train::run_eval(&args),
        Command::Study(args) => train::run_study(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Run(args) => run::run(&args),
        Command::FirmwareSim(args) => firmware_sim::run(&args),
        Command::Teleop(args) => teleop::run(&args, &ros_args),
        Command::Replay(args) => teleop::run_replay(&args),
        Command::Export(args) => export::run(&args),
        Command::VlmOracle(args) => vlm_oracle::run(&args),
        Command::Preference(args) => preference::run(&args),
        Command::Classifier { what } => classifier::run(&what),
        #[cfg(feature = "fleet")]
        Command::Learner(args) => fleet::run_learner(&args),
        #[cfg(feature = "fleet")]
        Command::Actor(args) => fleet::run_actor(&args, &ros_args),
        Command::Bench { what } => bench::run(&what),
        Command::Ros { what } => ros::run(&what, &ros_args),
    }
}

/// SIGTERM and the first Ctrl-C (SIGINT) set `reflex_jobs::train::INTERRUPT`: a command that
/// drives an arm (`reflex run`, `reflex train`) then presses its e-stop, brakes the arm to rest
/// within its limits and exits with its outputs written; servers stop. After the first Ctrl-C
/// the SIGINT handler steps aside, so a second one stops the process at once.
pub fn stop_on_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        // Only async-signal-safe work: an atomic store and signal(2).
        reflex_jobs::train::INTERRUPT.store(true, std::sync::atomic::Ordering::Relaxed);
        if sig == libc::SIGINT {
            // SAFETY: restoring the default disposition is async-signal-safe.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
            }
        }
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler above only does async-signal-safe work.
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
}
