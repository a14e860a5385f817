//! `reflex bench sim`: simulator throughput. Numbers, not assertions: run it on an idle machine.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reflex_core::{Action, Policy};
use reflex_sim::{Camera, Env, Frame, ScriptedExpert, Task, VecEnv};
use std::time::{Duration, Instant};

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Physics, environment and vectorised-environment throughput.
    Sim(BenchSimArgs),
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

pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sim(a) => bench_sim(a),
    }
}

/// Runs `f` repeatedly for about `seconds`; returns calls per second.
fn rate(seconds: f64, mut f: impl FnMut() -> Result<u64>) -> Result<f64> {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        n += f()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Drives `env` with its expert for one env step, resetting at episode ends.
struct Driver {
    env: Env,
    expert: ScriptedExpert,
    obs: reflex_core::Observation,
    action: Action,
    seed: u64,
}

impl Driver {
    fn new(env: Env) -> Result<Self> {
        let task = env.task().clone();
        let expert = ScriptedExpert::new(&task, env.model());
        let mut d = Self {
            env,
            expert,
            obs: Default::default(),
            action: Action::zeros(task.action_space),
            seed: 0,
        };
        d.obs = d.env.reset(0)?;
        Ok(d)
    }

    fn step(&mut self) -> Result<()> {
        self.expert.act(&self.obs, &mut self.action);
        let s = self.env.step(&self.action)?;
        self.obs = s.obs;
        if s.terminated || s.truncated {
            self.seed += 1;
            self.expert.reset();
            self.obs = self.env.reset(self.seed)?;
        }
        Ok(())
    }
}

fn bench_sim(a: &BenchSimArgs) -> Result<()> {
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Raw physics: the arm holding its pose and the objects resting on the table.
    // Sleeping is disabled on every body, so resting bodies cost what moving ones do.
    let mut env = Env::new(task.clone())?;
    env.reset(0)?;
    let physics_steps_per_s = rate(a.seconds, || {
        for _ in 0..100 {
            env.physics_step_only();
        }
        Ok(100)
    })?;

    let mut driver = Driver::new(Env::new(task.clone())?)?;
    let env_steps_per_s_state = rate(a.seconds, || {
        driver.step()?;
        Ok(1)
    })?;

    let camera = Camera::front(a.frame_size, a.frame_size);
    let mut frame = Frame::new(a.frame_size, a.frame_size);
    let mut camera_rate = |parallel: bool| -> Result<f64> {
        let mut driver = Driver::new(Env::new(task.clone())?)?;
        rate(a.seconds, || {
            driver.step()?;
            driver.env.render(&camera, &mut frame, parallel);
            Ok(1)
        })
    };
    let env_steps_per_s_camera = camera_rate(true)?;
    let env_steps_per_s_camera_1thread = camera_rate(false)?;

    // Frame times alone, mid-episode (arm over the table).
    let mut env = Env::new(task.clone())?;
    let mut driver_obs = env.reset(0)?;
    let mut expert = ScriptedExpert::new(&task, env.model());
    let mut act = Action::zeros(task.action_space);
    for _ in 0..5 {
        expert.act(&driver_obs, &mut act);
        driver_obs = env.step(&act)?.obs;
    }
    let frame_ms = |f: &mut dyn FnMut()| -> Result<f64> {
        Ok(1e3
            / rate(a.seconds / 3.0, || {
                f();
                Ok(1)
            })?)
    };
    let front_cached_ms = frame_ms(&mut || env.render(&camera, &mut frame, false))?;
    let front_cached_parallel_ms = frame_ms(&mut || env.render(&camera, &mut frame, true))?;
    let front_full_ms =
        frame_ms(&mut || reflex_sim::camera::render_full(&camera, env.world(), &mut frame, false))?;
    let wrist = Camera::wrist(a.frame_size, a.frame_size);
    let wrist_ms = frame_ms(&mut || env.render(&wrist, &mut frame, false))?;
    let wrist_parallel_ms = frame_ms(&mut || env.render(&wrist, &mut frame, true))?;

    let n = a.num_envs.unwrap_or(4 * cores);
    let mut vec_env = VecEnv::new(&task, n)?;
    let mut obs = vec![reflex_core::Observation::default(); n];
    vec_env.reset_all(0, &mut obs)?;
    let mut experts: Vec<ScriptedExpert> = (0..n)
        .map(|_| ScriptedExpert::new(&task, vec_env.envs()[0].model()))
        .collect();
    let mut actions = vec![Action::zeros(task.action_space); n];
    let mut steps = Vec::with_capacity(n);
    let mut next_seed = n as u64;
    let vec_env_steps_per_s = rate(a.seconds, || {
        for i in 0..n {
            experts[i].act(&obs[i], &mut actions[i]);
        }
        vec_env.step(&actions, &mut steps)?;
        for (i, s) in steps.iter().enumerate() {
            obs[i] = s.obs;
            if s.terminated || s.truncated {
                experts[i].reset();
                obs[i] = vec_env.reset_one(i, next_seed)?;
                next_seed += 1;
            }
        }
        Ok(n as u64)
    })?;

    let substeps = task.substeps();
    println!(
        "{}x{} frame: front {:.3} ms (fixed scene cached; {:.3} ms with rows in parallel, {:.3} ms casting every ray), wrist {:.3} ms ({:.3} ms parallel)",
        a.frame_size, a.frame_size, front_cached_ms, front_cached_parallel_ms, front_full_ms, wrist_ms, wrist_parallel_ms
    );
    println!(
        "{}: physics {:.0} steps/s; env {:.0} steps/s (state), {:.0} steps/s (+{}x{} camera, rows on {} cores), {:.0} steps/s (camera, 1 thread); vectorised {} envs {:.0} steps/s; {} physics steps per env step",
        task.name,
        physics_steps_per_s,
        env_steps_per_s_state,
        env_steps_per_s_camera,
        a.frame_size,
        a.frame_size,
        cores,
        env_steps_per_s_camera_1thread,
        n,
        vec_env_steps_per_s,
        substeps
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "task": task.name,
                "physics_steps_per_s": physics_steps_per_s,
                "env_steps_per_s_state": env_steps_per_s_state,
                "env_steps_per_s_camera": env_steps_per_s_camera,
                "env_steps_per_s_camera_1thread": env_steps_per_s_camera_1thread,
                "vec_env_steps_per_s": vec_env_steps_per_s,
                "vec_envs": n,
                "cores": cores,
                "frame_size": a.frame_size,
                "front_frame_ms": front_cached_ms,
                "front_frame_parallel_ms": front_cached_parallel_ms,
                "front_frame_uncached_ms": front_full_ms,
                "wrist_frame_ms": wrist_ms,
                "wrist_frame_parallel_ms": wrist_parallel_ms,
                "physics_steps_per_env_step": substeps,
            })
        );
    }
    Ok(())
}
