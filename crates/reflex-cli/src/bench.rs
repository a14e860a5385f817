//! `reflex bench sim|policy|loop`: simulator throughput, policy latency, loop timing. Numbers,
//! not assertions: run them on an idle machine.

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
    /// One-sample policy latency: an MLP forward pass, and base + residual + safety filter.
    Policy(BenchPolicyArgs),
    /// The control loop at a fixed rate: deadline misses, wake-up jitter, compute time.
    Loop(BenchLoopArgs),
    /// Full SAC updates per second (batch 256, [256, 256] networks, both cores).
    Learner(crate::bench_learn::BenchLearnerArgs),
    /// SAC on the pendulum: steps and seconds until the last 10 returns average above -200.
    Pendulum(crate::bench_learn::BenchPendulumArgs),
    /// End-to-end environment steps and updates per second while training.
    Train(crate::bench_learn::BenchTrainArgs),
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

pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sim(a) => bench_sim(a),
        BenchCommand::Policy(a) => bench_policy(a),
        BenchCommand::Loop(a) => bench_loop(a),
        BenchCommand::Learner(a) => crate::bench_learn::bench_learner(a),
        BenchCommand::Pendulum(a) => crate::bench_learn::bench_pendulum(a),
        BenchCommand::Train(a) => crate::bench_learn::bench_train(a),
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

/// p50 and p99 of `samples` timings of `f`, microseconds.
fn latency_us(samples: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..samples / 10 {
        f(); // warm caches and branch predictors
    }
    let mut t: Vec<f64> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        f();
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn random_mlp(dims: &[usize], seed: u64) -> reflex_runtime::Mlp {
    use reflex_runtime::{Activation, Mlp};
    let mut m = Mlp::zeros(dims, Activation::Relu, Activation::Tanh);
    let mut s = seed;
    for i in 0..m.num_layers() {
        if let Some((w, b)) = m.layer_mut(i) {
            for v in w.iter_mut().chain(b.iter_mut()) {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            }
        }
    }
    m
}

/// The control tick the runtime will run, with random networks: base MLP on the observation,
/// residual MLP on observation and base action, composition, safety filter. Benchmark scaffolding
/// until the runtime's own loop lands; everything is preallocated.
struct SyntheticTick {
    base_net: reflex_runtime::Mlp,
    residual_net: reflex_runtime::Mlp,
    composer: reflex_runtime::Composer,
    filter: reflex_runtime::SafetyFilter,
    base: Action,
    residual: Action,
    action: Action,
    obs_base: [f32; 47],
    wish: reflex_core::JointCommand,
    /// The command of the last tick.
    cmd: reflex_core::JointCommand,
}

impl SyntheticTick {
    /// Arm at its home pose; `dt_s` is the loop period.
    fn new(dt_s: f64) -> Result<(Self, reflex_core::RobotState)> {
        use reflex_core::{ActionSpace, ArmModel, RobotState, SafetyLimits};
        let urdf = reflex_sim::env::default_urdf_path();
        let arm = ArmModel::from_urdf_file(&urdf, "link0", "tcp")?;
        let state = RobotState {
            joint_pos_rad: [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785],
            gripper_width_m: 0.04,
            ..Default::default()
        };
        let filter = reflex_runtime::SafetyFilter::new(
            SafetyLimits::from_model(&arm),
            arm,
            dt_s,
            reflex_runtime::EStop::new(),
            &state,
        )?;
        let tick = Self {
            base_net: random_mlp(&[39, 256, 256, 8], 2),
            residual_net: random_mlp(&[47, 256, 256, 8], 3),
            composer: reflex_runtime::Composer::new(0.3, 0.5, 100),
            filter,
            base: Action::zeros(ActionSpace::JointDelta),
            residual: Action::zeros(ActionSpace::JointDelta),
            action: Action::zeros(ActionSpace::JointDelta),
            obs_base: [0.0; 47],
            wish: Default::default(),
            cmd: Default::default(),
        };
        Ok((tick, state))
    }

    /// One tick from `obs` and the measured `state`; the command lands in `self.cmd`.
    fn run(&mut self, obs: &[f32; 39], state: &reflex_core::RobotState, step_rad: f64) {
        let _ = self.base_net.forward(obs, self.base.as_mut_slice());
        self.obs_base[..39].copy_from_slice(obs);
        self.obs_base[39..].copy_from_slice(self.base.as_slice());
        let _ = self
            .residual_net
            .forward(&self.obs_base, self.residual.as_mut_slice());
        self.composer
            .compose(&self.base, &self.residual, None, &mut self.action);
        for (i, q) in self.wish.joint_pos_rad.iter_mut().enumerate() {
            *q = state.joint_pos_rad[i] + step_rad * self.action.as_slice()[i] as f64;
        }
        self.wish.gripper_width_m = 0.04;
        self.filter.filter(&self.wish, state, true, &mut self.cmd);
    }
}

fn bench_policy(a: &BenchPolicyArgs) -> Result<()> {
    let mut mlp = random_mlp(&[39, 256, 256, 7], 1);
    let fast_kernel = mlp.uses_fast_kernel();
    let obs: Vec<f32> = (0..39).map(|i| (i as f32 * 0.3).sin()).collect();
    let mut out = [0f32; 7];
    let (p50_us, p99_us) = latency_us(a.samples, || {
        let _ = mlp.forward(std::hint::black_box(&obs), &mut out);
    });

    // One composed tick: base, residual on (obs, base), composition, safety filter.
    let (mut tick, state) = SyntheticTick::new(0.001)?;
    let obs39: [f32; 39] = std::array::from_fn(|i| obs[i]);
    let (composed_p50_us, composed_p99_us) =
        latency_us(a.samples, || tick.run(&obs39, &state, 0.001));
    println!(
        "MLP 39-256-256-7 one sample: p50 {p50_us:.2} us, p99 {p99_us:.2} us ({} kernel); base + residual + composition + safety filter: p50 {composed_p50_us:.2} us, p99 {composed_p99_us:.2} us",
        if fast_kernel { "AVX2+FMA" } else { "portable" }
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "p50_us": p50_us,
                "p99_us": p99_us,
                "composed_p50_us": composed_p50_us,
                "composed_p99_us": composed_p99_us,
                "kernel": if fast_kernel { "avx2_fma" } else { "portable" },
                "samples": a.samples,
            })
        );
    }
    Ok(())
}

/// Keeps the VLM client busy against an in-process oracle server answering after 1 s, until
/// `stop`; each answer is published in `cell`. Returns the answers received.
fn vlm_traffic(
    stop: &std::sync::atomic::AtomicBool,
    cell: &reflex_core::LatestCell<(u64, f32)>,
    in_flight_max: &std::sync::atomic::AtomicU64,
) -> u64 {
    use reflex_reward::oracle::{Oracle, OracleConfig};
    use reflex_reward::parse::Grid;
    use reflex_reward::vlm::{Png, Query, Request, VlmClient, VlmConfig};
    use std::sync::atomic::Ordering;
    let run = || -> Result<u64> {
        let server = Oracle::start(
            ([127, 0, 0, 1], 0).into(),
            OracleConfig {
                latency: Duration::from_secs(1),
                ..Default::default()
            },
        )?;
        let client = VlmClient::start(VlmConfig {
            base_url: server.base_url(),
            ..Default::default()
        })?;
        let task = reflex_sim::Task::load("pick_cube")?;
        let mut env = reflex_sim::Env::new(task.clone())?;
        env.reset(0)?;
        let camera = reflex_sim::Camera::front(160, 120);
        let mut frame = reflex_sim::Frame::new(160, 120);
        env.render(&camera, &mut frame, false);
        let image = std::sync::Arc::new(Png::encode_rgb(160, 120, &frame.rgb)?);
        let grid = Grid {
            width: 160,
            height: 120,
            cols: 8,
            rows: 6,
        };
        let (mut asked, mut answered) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            loop {
                let req = Request {
                    id: asked,
                    query: Query::Keypoints {
                        image: image.clone(),
                        grid,
                        instruction: task.instruction.clone(),
                    },
                    // Distinct hints keep the disk cache out of it (there is none here anyway).
                    hint: Some(serde_json::json!({
                        "keypoints": { "affordance": [80.0, 60.0 + (asked % 50) as f64], "waypoints": [] },
                        "image": [160, 120],
                    })),
                };
                if client.submit(req).is_err() {
                    break;
                }
                asked += 1;
            }
            in_flight_max.fetch_max(asked - answered, Ordering::Relaxed);
            if let Some(reply) = client.recv_timeout(Duration::from_millis(100)) {
                answered += 1;
                if reply.result.is_ok() {
                    cell.set((answered, 0.5));
                }
            }
        }
        server.stop();
        Ok(answered)
    };
    match run() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("VLM traffic stopped: {e}");
            0
        }
    }
}

fn bench_loop(a: &BenchLoopArgs) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    use reflex_core::LatestCell;
    use reflex_runtime::{LoopStats, RealTime, RealTimeRequest, Ticker};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stats = Arc::new(LoopStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rewards: Arc<LatestCell<(u64, f32)>> = Arc::new(LatestCell::new());
    let vlm_in_flight_max = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    if a.load {
        // The learner: busy on its own core, as gradient steps would be.
        let stop_l = stop.clone();
        let pin = !a.no_realtime;
        workers.push(std::thread::spawn(move || {
            if pin {
                let _ = RealTime::request(&RealTimeRequest {
                    fifo_priority: None,
                    mlock: false,
                    cpu: Some(0),
                });
            }
            let mut net = random_mlp(&[46, 256, 256, 1], 9);
            let x = [0.1f32; 46];
            let mut y = [0f32; 1];
            let mut n = 0u64;
            while !stop_l.load(Ordering::Relaxed) {
                let _ = net.forward(std::hint::black_box(&x), &mut y);
                n += 1;
            }
            n
        }));
        // The reward worker: real VLM traffic over loopback HTTP. An oracle server answers
        // every keypoint question after 1 s; the client keeps its queue full of questions on
        // a rendered frame, so several are always in flight; answers reach the loop through
        // a cell it never waits on.
        let stop_r = stop.clone();
        let cell = rewards.clone();
        let in_flight_max = vlm_in_flight_max.clone();
        workers.push(std::thread::spawn(move || {
            vlm_traffic(&stop_r, &cell, &in_flight_max)
        }));
    }

    let rate = a.rate;
    let seconds = a.seconds;
    let realtime = !a.no_realtime;
    let stats_c = stats.clone();
    let cell = rewards.clone();
    let control = std::thread::spawn(move || -> Result<RealTime> {
        let rt = RealTime::request(&RealTimeRequest {
            fifo_priority: realtime.then_some(80),
            mlock: realtime,
            cpu: realtime.then_some(cores - 1),
        });
        let (mut tick, mut state) = SyntheticTick::new(1.0 / rate)?;
        let mut obs = [0f32; 39];
        let mut last_reward = 0.0f32;
        let mut ticker = Ticker::new(rate);
        let total = (seconds * rate).round() as u64;
        for _ in 0..total {
            let woke = ticker.wait(&stats_c);
            // The reward worker's answer, if one arrived: never waited for.
            if let Some((_, r)) = cell.take() {
                last_reward = r;
            }
            for (o, q) in obs.iter_mut().zip(&state.joint_pos_rad) {
                *o = *q as f32;
            }
            obs[38] = last_reward;
            tick.run(&obs, &state, 0.0005);
            state.joint_pos_rad = tick.cmd.joint_pos_rad;
            stats_c.compute.record(woke.elapsed().as_nanos() as u64);
        }
        Ok(rt)
    });

    let bar = ProgressBar::new((a.seconds * a.rate) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ticks, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !control.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        bar.set_position(stats.ticks.load(std::sync::atomic::Ordering::Relaxed));
        bar.set_message(format!(
            "{} missed",
            stats
                .deadline_misses
                .load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    let rt = control
        .join()
        .map_err(|_| anyhow::anyhow!("the control thread panicked"))??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut learner_passes = 0;
    let mut reward_answers = 0;
    for (i, w) in workers.into_iter().enumerate() {
        let n = w
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        if i == 0 {
            learner_passes = n;
        } else {
            reward_answers = n;
        }
    }
    let us = |ns: u64| ns as f64 / 1e3;
    let ticks = stats.ticks.load(std::sync::atomic::Ordering::Relaxed);
    let misses = stats
        .deadline_misses
        .load(std::sync::atomic::Ordering::Relaxed);
    if a.load {
        println!(
            "load: a learner busy on core 0; {reward_answers} VLM answers over loopback HTTP, up to {} questions in flight",
            vlm_in_flight_max.load(Ordering::Relaxed)
        );
    }
    let status = |r: &std::result::Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    for (what, r) in [
        ("SCHED_FIFO", &rt.fifo),
        ("mlockall", &rt.mlock),
        ("CPU pinning", &rt.pinned),
    ] {
        if let Err(e) = r {
            if !a.no_realtime {
                tracing::warn!("{what} not obtained: {e}");
            }
        }
    }
    println!(
        "{ticks} ticks at {} Hz{}: {misses} deadline misses; wake-up jitter p50 {:.1} us, p99 {:.1} us, max {:.1} us; compute p50 {:.1} us, p99 {:.1} us",
        a.rate,
        if a.load { " under load" } else { "" },
        us(stats.jitter.quantile_ns(0.5)),
        us(stats.jitter.quantile_ns(0.99)),
        us(stats.jitter.max_ns()),
        us(stats.compute.quantile_ns(0.5)),
        us(stats.compute.quantile_ns(0.99)),
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "rate_hz": a.rate,
                "seconds": a.seconds,
                "load": a.load,
                "ticks": ticks,
                "deadline_misses": misses,
                "jitter_p50_us": us(stats.jitter.quantile_ns(0.5)),
                "jitter_p99_us": us(stats.jitter.quantile_ns(0.99)),
                "jitter_max_us": us(stats.jitter.max_ns()),
                "compute_p50_us": us(stats.compute.quantile_ns(0.5)),
                "compute_p99_us": us(stats.compute.quantile_ns(0.99)),
                "learner_forward_passes": learner_passes,
                "reward_answers": reward_answers,
                "vlm_in_flight_max": vlm_in_flight_max.load(Ordering::Relaxed),
                "sched_fifo": status(&rt.fifo),
                "mlockall": status(&rt.mlock),
                "pinned": status(&rt.pinned),
            })
        );
    }
    Ok(())
}
