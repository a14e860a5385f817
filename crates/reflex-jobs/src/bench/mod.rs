//! `reflex bench`: simulator throughput, policy latency and loop timing (here), the learner's
//! update rate, the pendulum and end-to-end training ([`learn`]), ROS 2 round trips ([`ros`]),
//! page-to-arm latency of a teleop session ([`teleop`]), the serial link's frames ([`wire`]), the pixel encoder's cost in the tick and in training ([`pixels`]), the link end to end ([`serial`]) and, with the `fleet`
//! feature, a learner's intake from actor processes over Zenoh (`fleet`). Numbers, not assertions: run
//! them on an idle machine. Each returns a [`BenchReport`]: the lines a person reads and the
//! JSON object a machine does.

#[cfg(feature = "fleet")]
pub mod fleet;
pub mod learn;
pub mod pixels;
pub mod ros;
pub mod serial;
pub mod teleop;
pub mod wire;

/// What a benchmark measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    /// Lines for people.
    pub lines: Vec<String>,
    /// The figures as one JSON object.
    pub json: serde_json::Value,
}

use anyhow::{Context, Result};
use reflex_core::{Action, Policy};
use reflex_sim::{Camera, Env, Frame, ScriptedExpert, Task, VecEnv};
use std::time::{Duration, Instant};

/// Settings of `reflex bench loop`.
#[derive(Clone, Debug)]
pub struct BenchLoopSpec {
    /// Control rate, Hz.
    pub rate: f64,
    /// Duration, seconds.
    pub seconds: f64,
    /// Meanwhile run a busy learner thread and real VLM traffic: keypoint questions on a
    /// rendered frame to an in-process oracle server over loopback HTTP, answered after 1 s,
    /// with the client's queue kept full.
    pub load: bool,
    /// Do not ask for SCHED_FIFO, mlockall and CPU pinning.
    pub no_realtime: bool,
}

/// Settings of `reflex bench policy`.
#[derive(Clone, Debug)]
pub struct BenchPolicySpec {
    /// Forward passes to time.
    pub samples: usize,
}

/// Settings of `reflex bench sim`.
#[derive(Clone, Debug)]
pub struct BenchSimSpec {
    /// Task name or file.
    pub task: String,
    /// Seconds to spend on each measurement.
    pub seconds: f64,
    /// Camera resolution for the camera measurement, pixels (square).
    pub frame_size: usize,
    /// Environments in the vectorised measurement (default: 4 per core).
    pub num_envs: Option<usize>,
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
    pub env: Env,
    pub expert: ScriptedExpert,
    pub obs: reflex_core::Observation,
    pub action: Action,
    pub seed: u64,
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

pub fn bench_sim(a: &BenchSimSpec) -> Result<BenchReport> {
    let mut out = BenchReport::default();
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
    out.lines.push(format!(
        "{}x{} frame: front {:.3} ms (fixed scene cached; {:.3} ms with rows in parallel, {:.3} ms casting every ray), wrist {:.3} ms ({:.3} ms parallel)",
        a.frame_size, a.frame_size, front_cached_ms, front_cached_parallel_ms, front_full_ms, wrist_ms, wrist_parallel_ms
    ));
    out.lines.push(format!(
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
    ));
    {
        out.json = serde_json::json!({
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
        });
    }
    Ok(out)
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

/// The real control loop over a robot stand-in, as `bench policy` and `bench loop` time it: the
/// shipped arm with second-order joint dynamics reporting a fixed scene (1 object, 2 keypoints,
/// 1 goal: a 38-value observation), a base MLP (38-256-256-7), an exploring tanh-Gaussian
/// residual (45-256-256-14) whose weights another thread may swap, the takeover rule, the
/// action mapper, the safety filter, and the transition ring.
struct LoopUnderTest {
    pub rt: reflex_runtime::Runtime<reflex_runtime::StandInArm>,
    pub residual: std::sync::Arc<reflex_runtime::WeightsSlot>,
    pub obs_dim: usize,
}

fn loop_under_test(rate_hz: f64, policy_rate_hz: f64) -> Result<LoopUnderTest> {
    use reflex_core::{ActionSpace, ArmModel, ControlSpec, Observation, SafetyLimits};
    use reflex_runtime::{
        EStop, NetPolicy, ResidualPolicy, Runtime, RuntimeConfig, StandInArm, WeightsSlot,
    };
    let urdf = reflex_sim::env::default_urdf_path();
    let arm = ArmModel::from_urdf_file(&urdf, "link0", "tcp")?;
    let home = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];
    let robot = StandInArm::new(arm.clone(), home, 0.04, 1.0 / rate_hz).with_scene(1, 2, 1);
    let obs_dim = Observation::flat_len(1, 2, 1);
    let base = NetPolicy::new(
        WeightsSlot::new(random_mlp(&[obs_dim, 256, 256, 7], 2)),
        obs_dim,
        7,
    )?;
    let residual_slot = WeightsSlot::new(random_mlp(&[obs_dim + 7, 256, 256, 14], 3));
    let explore = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let residual = ResidualPolicy::tanh_gaussian(residual_slot.clone(), obs_dim, 7, explore, 1)?;
    let cfg = RuntimeConfig::new(
        rate_hz,
        policy_rate_hz,
        ActionSpace::EeDelta,
        ControlSpec::default(),
        home,
        SafetyLimits::from_model(&arm),
    );
    let rt = Runtime::new(
        robot,
        cfg,
        arm,
        Box::new(base),
        Some(residual),
        EStop::new(),
    )?;
    Ok(LoopUnderTest {
        rt,
        residual: residual_slot,
        obs_dim,
    })
}

pub fn bench_policy(a: &BenchPolicySpec) -> Result<BenchReport> {
    let mut out = BenchReport::default();
    let mut mlp = random_mlp(&[39, 256, 256, 7], 1);
    let fast_kernel = mlp.uses_fast_kernel();
    let obs: Vec<f32> = (0..39).map(|i| (i as f32 * 0.3).sin()).collect();
    let mut y = [0f32; 7];
    let (p50_us, p99_us) = latency_us(a.samples, || {
        let _ = mlp.forward(std::hint::black_box(&obs), &mut y);
    });

    // The real runtime's tick: at a policy step (observation, base, residual, composition,
    // mapper, filter, robot I/O, transition) and between them (mapper, filter, robot I/O).
    let mut lut = loop_under_test(1000.0, 100.0)?;
    let per_step = lut.rt.ticks_per_step() as usize;
    let mut step_t = Vec::with_capacity(a.samples / per_step + 1);
    let mut servo_t = Vec::with_capacity(a.samples);
    for i in 0..a.samples + a.samples / 10 {
        let start = Instant::now();
        let r = lut.rt.tick();
        let us = start.elapsed().as_secs_f64() * 1e6;
        while lut.rt.transitions().pop().is_some() {}
        if i < a.samples / 10 {
            continue; // warm-up
        }
        if r.policy_step {
            step_t.push(us);
        } else {
            servo_t.push(us);
        }
    }
    let q = |t: &mut Vec<f64>, p: f64| {
        t.sort_by(f64::total_cmp);
        t.get(((t.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (step_p50, step_p99) = (q(&mut step_t, 0.5), q(&mut step_t, 0.99));
    let (servo_p50, servo_p99) = (q(&mut servo_t, 0.5), q(&mut servo_t, 0.99));
    out.lines.push(format!(
        "MLP 39-256-256-7 one sample: p50 {p50_us:.2} us, p99 {p99_us:.2} us ({} kernel); runtime tick with a policy step (obs {}, base + residual + composition + mapper + safety filter + stand-in arm): p50 {step_p50:.2} us, p99 {step_p99:.2} us ({} ticks); servo tick: p50 {servo_p50:.2} us, p99 {servo_p99:.2} us",
        if fast_kernel { "AVX2+FMA" } else { "portable" },
        lut.obs_dim,
        step_t.len(),
    ));
    {
        out.json = serde_json::json!({
            "p50_us": p50_us,
            "p99_us": p99_us,
            "policy_tick_p50_us": step_p50,
            "policy_tick_p99_us": step_p99,
            "servo_tick_p50_us": servo_p50,
            "servo_tick_p99_us": servo_p99,
            "policy_ticks": step_t.len(),
            "obs_dim": lut.obs_dim,
            "kernel": if fast_kernel { "avx2_fma" } else { "portable" },
            "samples": a.samples,
        });
    }
    Ok(out)
}

/// Keeps the VLM client busy against an in-process oracle server answering after 1 s, until
/// `stop`. Returns the answers received.
fn vlm_traffic(
    stop: &std::sync::atomic::AtomicBool,
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
            if client.recv_timeout(Duration::from_millis(100)).is_some() {
                answered += 1;
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

/// Runs the loop benchmark; `progress(ticks_done, ticks_total, message)` is called about every
/// 200 ms.
pub fn bench_loop(
    a: &BenchLoopSpec,
    mut progress: impl FnMut(u64, u64, String),
) -> Result<BenchReport> {
    let mut out = BenchReport::default();
    use reflex_runtime::{RealTime, RealTimeRequest};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        anyhow::bail!("--seconds {}: expected a positive duration", a.seconds);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lut = loop_under_test(a.rate, (a.rate / 10.0).min(100.0))?;
    let stats = lut.rt.stats().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let vlm_in_flight_max = Arc::new(AtomicU64::new(0));
    let mut workers: Vec<std::thread::JoinHandle<u64>> = Vec::new();
    // Always: the learner's side of the seams. New residual weights every 20 ms (hot swap), the
    // transitions drained, and an operator taking over for 0.3 s of every 2 s.
    {
        let (slot, stop) = (lut.residual.clone(), stop.clone());
        let dims = [lut.obs_dim + 7, 256, 256, 14];
        workers.push(std::thread::spawn(move || {
            let mut k = 10;
            while !stop.load(Ordering::Relaxed) {
                if slot.publish(random_mlp(&dims, k)).is_ok() {
                    k += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            k - 10
        }));
    }
    {
        let (q, stop) = (lut.rt.transitions().clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                while q.pop().is_some() {
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        }));
    }
    {
        let (op, stop) = (lut.rt.operator().clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0;
            let mut human = Action::zeros(reflex_core::ActionSpace::EeDelta);
            while !stop.load(Ordering::Relaxed) {
                // An operator whose link is alive: holds the intervene control for 0.3 s of
                // every 2 s, sends released commands the rest of the time.
                let t = start.elapsed().as_secs_f64() % 2.0;
                human.as_mut_slice()[2] = match t {
                    t if t < 0.15 => 0.8,
                    t if t < 0.3 => -0.8,
                    _ => 0.0,
                };
                op.send(if t < 0.3 {
                    reflex_core::OperatorCommand::held(human)
                } else {
                    reflex_core::OperatorCommand {
                        action: human,
                        ..reflex_core::OperatorCommand::released(reflex_core::ActionSpace::EeDelta)
                    }
                });
                sent += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            sent
        }));
    }
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
        // a rendered frame, so several are always in flight; the loop never waits on it.
        let stop_r = stop.clone();
        let in_flight_max = vlm_in_flight_max.clone();
        workers.push(std::thread::spawn(move || {
            vlm_traffic(&stop_r, &in_flight_max)
        }));
    }

    let (seconds, rate) = (a.seconds, a.rate);
    let realtime = !a.no_realtime;
    let control = std::thread::spawn(move || -> Result<(RealTime, LoopUnderTest)> {
        let got = RealTime::request(&RealTimeRequest {
            fifo_priority: realtime.then_some(80),
            mlock: realtime,
            cpu: realtime.then_some(cores - 1),
        });
        // Exactly `seconds * rate` ticks, paced as `Runtime::run` paces them: each tick has a
        // deadline one period after its scheduled start.
        let mut ticker = reflex_runtime::Ticker::new(rate);
        for _ in 0..(seconds * rate).round() as u64 {
            lut.rt.tick_paced(&mut ticker);
        }
        Ok((got, lut))
    });

    let total = (a.seconds * a.rate) as u64;
    while !control.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        progress(
            stats.timing.ticks.load(Ordering::Relaxed),
            total,
            format!(
                "{} missed",
                stats.timing.deadline_misses.load(Ordering::Relaxed)
            ),
        );
    }
    let (rt_got, lut) = control
        .join()
        .map_err(|_| anyhow::anyhow!("the control thread panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for w in workers {
        counts.push(
            w.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        );
    }
    let (swaps, drained, operator_msgs) = (counts[0], counts[1], counts[2]);
    let (learner_passes, reward_answers) = if a.load {
        (counts[3], counts[4])
    } else {
        (0, 0)
    };
    let us = |ns: u64| ns as f64 / 1e3;
    let t = &stats.timing;
    let ticks = t.ticks.load(Ordering::Relaxed);
    let misses = t.deadline_misses.load(Ordering::Relaxed);
    let late10 = t.late_10pct.load(Ordering::Relaxed);
    let late50 = t.late_50pct.load(Ordering::Relaxed);
    let q = lut.rt.transitions().stats();
    if a.load {
        out.lines.push(format!(
            "load: a learner busy on core 0; {reward_answers} VLM answers over loopback HTTP, up to {} questions in flight",
            vlm_in_flight_max.load(Ordering::Relaxed)
        ));
    }
    let status = |r: &std::result::Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    for (what, r) in [
        ("SCHED_FIFO", &rt_got.fifo),
        ("mlockall", &rt_got.mlock),
        ("CPU pinning", &rt_got.pinned),
    ] {
        if let Err(e) = r {
            if !a.no_realtime {
                tracing::warn!("{what} not obtained: {e}");
            }
        }
    }
    out.lines.push(format!(
        "the Runtime over a stand-in arm, {ticks} ticks at {} Hz{}: {misses} deadline misses (finished after the deadline), {late10} woke >10% of a period late, {late50} >50%; wake-up jitter p50 {:.1} us, p99 {:.1} us, max {:.1} us; compute p50 {:.1} us, p99 {:.1} us, max {:.1} us; {} weight swaps, {} transitions ({} refused), {} operator messages",
        a.rate,
        if a.load { " under load" } else { "" },
        us(t.jitter.quantile_ns(0.5)),
        us(t.jitter.quantile_ns(0.99)),
        us(t.jitter.max_ns()),
        us(t.compute.quantile_ns(0.5)),
        us(t.compute.quantile_ns(0.99)),
        us(t.compute.max_ns()),
        swaps,
        q.pushed,
        q.dropped,
        operator_msgs,
    ));
    {
        out.json = serde_json::json!({
            "rate_hz": a.rate,
            "seconds": a.seconds,
            "load": a.load,
            "ticks": ticks,
            "deadline_misses": misses,
            "late_10pct": late10,
            "late_50pct": late50,
            "jitter_p50_us": us(t.jitter.quantile_ns(0.5)),
            "jitter_p99_us": us(t.jitter.quantile_ns(0.99)),
            "jitter_max_us": us(t.jitter.max_ns()),
            "compute_p50_us": us(t.compute.quantile_ns(0.5)),
            "compute_p99_us": us(t.compute.quantile_ns(0.99)),
            "compute_max_us": us(t.compute.max_ns()),
            "policy_steps": stats.policy_steps.load(Ordering::Relaxed),
            "intervened_steps": stats.intervened_steps.load(Ordering::Relaxed),
            "weight_swaps": swaps,
            "residual_version": lut.residual.version(),
            "transitions": q.pushed,
            "transitions_refused": q.dropped,
            "transitions_drained": drained,
            "operator_messages": operator_msgs,
            "learner_forward_passes": learner_passes,
            "reward_answers": reward_answers,
            "vlm_in_flight_max": vlm_in_flight_max.load(Ordering::Relaxed),
            "sched_fifo": status(&rt_got.fifo),
            "mlockall": status(&rt_got.mlock),
            "pinned": status(&rt_got.pinned),
        });
    }
    Ok(out)
}
