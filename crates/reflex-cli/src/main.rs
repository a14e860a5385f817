//! The `reflex` command.
//!
//! - `reflex train`: the main job, residual RL on a behaviour-cloned base in the simulator.
//! - `reflex eval`: success rate of a trained run.
//! - `reflex sim`: run a policy in the simulator and report its success rate.
//! - `reflex run`: the runtime's control loop driving the simulated arm in real time.
//! - `reflex bench sim|policy|loop|learner|pendulum|train`: throughput, latency and learning figures.

mod bench;
mod bench_learn;
mod run;
mod sim;
mod train;

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
    /// Train a residual policy on a behaviour-cloned base in the simulator (the main job).
    Train(train::TrainArgs),
    /// Success rate of a trained run directory.
    Eval(train::EvalArgs),
    /// Run a policy in the simulator and report success.
    Sim(sim::SimArgs),
    /// Run the control loop against the simulator in real time; report success and timing.
    Run(run::RunArgs),
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Train(args) => train::run_train(&args),
        Command::Eval(args) => train::run_eval(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Bench { what } => bench::run(&what),
    }
}
