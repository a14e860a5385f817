//! `reflex teleop`: a correction session on the simulated arm (or, `--robot ros`, a ros2_control
//! arm through the bridge, with `--params` and trailing `--ros-args`). Prints the page's address with
//! its access token, then runs until `--seconds` pass or Ctrl-C (the arm is brought to rest), and
//! reports episodes, successes and how much the operator drove. With `--learn` the session
//! continues a training run and learns from it live; `--operator scripted` puts the scripted
//! operator at the page instead of a person.

use anyhow::{bail, Context, Result};
use clap::Args;
use reflex_jobs::teleop::learn::LearnSpec;
use reflex_jobs::teleop::operator::{run_scripted_operator, OperatorRule};
use reflex_jobs::teleop::{SessionRobot, TeleopSession, TeleopSpec};
use reflex_sim::Task;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Arguments of `reflex teleop`.
#[derive(Args)]
pub struct TeleopArgs {
    /// Task name (from sim/tasks) or path to a task file.
    #[arg(long)]
    task: String,
    /// The arm: `sim` (the built-in simulator) or `ros` (a ros2_control arm through the ROS 2
    /// bridge, configured by `--params` and any `--ros-args ...` after the command's own).
    #[arg(long, default_value = "sim")]
    robot: String,
    /// With `--robot ros`: the bridge's parameter file (`node: ros__parameters:` form); same
    /// as `--ros-args --params-file FILE`.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Base policy: `scripted` (the task's scripted expert), a safetensors weights file, or a
    /// training run's directory (its base, and its policy as the residual). With `--learn`: the
    /// run to continue.
    #[arg(long, default_value = "scripted")]
    policy: String,
    /// Residual network (safetensors).
    #[arg(long)]
    residual: Option<PathBuf>,
    /// Control loop rate, Hz [default: the policy files', else 500].
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the first scene; episode i uses `seed + i`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Port of the page (0: any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Serve on this address instead of 127.0.0.1 (another machine can then reach the page;
    /// it still needs the access token).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// End after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    seconds: Option<f64>,
    /// Learn from the session: continue the training run `--policy` names, in `--out` (a copy;
    /// the run is not written to), publishing new weights to the running policy as it learns.
    #[arg(long)]
    learn: bool,
    /// The session's directory: its recording (`reflex replay`) and, learning, its run
    /// [default: sessions/<task>-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the learning session in `--out` (its replay and newest checkpoint).
    #[arg(long)]
    resume: bool,
    /// Seconds between snapshots of the learning policy (`--out`/snapshots), for evaluating the
    /// session's progress afterwards; 0: none.
    #[arg(long, default_value_t = 300.0)]
    snapshot_every: f64,
    /// Critic updates per environment step while learning [default: 8; the run's own ratio
    /// suits a simulator, where data comes faster than a real-time session's ten steps a
    /// second].
    #[arg(long)]
    utd: Option<f32>,
    /// Weight of the actor's imitation term on demonstrations and the operator's takeovers
    /// while learning (0: pure RLPD) [default: 0.4, TD3+BC's weighting].
    #[arg(long)]
    bc_weight: Option<f32>,
    /// Who operates: `page` (a person at the page) or `scripted` (the scripted operator, over
    /// the same WebSocket: the task's expert takes over when the policy stalls or drifts).
    #[arg(long, default_value = "page")]
    operator: String,
    /// The scripted operator's largest share of steps.
    #[arg(long, default_value_t = 0.8)]
    operator_max_share: f64,
    /// The scripted operator takes over when the task's plan has not advanced for this many
    /// policy steps.
    #[arg(long, default_value_t = 10)]
    operator_patience: u64,
    /// The scripted operator leaves a policy alone while its reward keeps rising (off: in the
    /// sessions measured so far the policy then learned more slowly).
    #[arg(long)]
    operator_reward_progress: bool,
    /// The scripted operator counts a tool still coming closer to the expert's target as
    /// progress: a slow but working policy is not taken over.
    #[arg(long)]
    operator_stall_on_distance: bool,
    /// Read a gamepad connected to this machine as well (built with the `gamepad` feature):
    /// hold LB or RB to drive, as on the page.
    #[arg(long)]
    gamepad: bool,
    /// Read a 3Dconnexion SpaceMouse connected to this machine as well (Linux hidraw; the user
    /// needs read access to /dev/hidraw*): deflecting the puck drives, the left button closes
    /// the gripper and the right one opens it.
    #[arg(long)]
    spacemouse: bool,
    /// Record no camera frames (by default the front and wrist cameras are recorded with the
    /// session, one frame per policy step, through the system's ffmpeg, for `reflex export`).
    #[arg(long)]
    no_frames: bool,
    /// Hold the arm still for this many policy steps after the task's success before the
    /// episode ends, so the recording shows the finished scene `N + 1` times per success
    /// (positives for `reflex classifier train --sessions S --positive-last N+1`). The
    /// episode is a success only if the task still says so after the hold.
    #[arg(long, default_value_t = 0)]
    success_hold: u32,
    /// Print a JSON report as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &TeleopArgs, ros_args: &[String]) -> Result<()> {
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    let robot = match a.robot.as_str() {
        "sim" => {
            if a.params.is_some() || !ros_args.is_empty() {
                bail!("--params and --ros-args belong to --robot ros");
            }
            SessionRobot::Sim
        }
        "ros" => {
            let mut ros = reflex_ros::RosArgs::parse(ros_args)?;
            if let Some(p) = &a.params {
                ros.params_files.insert(0, p.clone());
            }
            SessionRobot::Ros(ros)
        }
        other => bail!("--robot {other}: expected sim or ros"),
    };
    if let Some(s) = a.seconds {
        if !(s > 0.0 && s.is_finite()) {
            bail!("--seconds {s}: expected a positive duration");
        }
    }
    if !matches!(a.operator.as_str(), "page" | "scripted") {
        bail!("--operator {}: expected page or scripted", a.operator);
    }
    if !(0.0..=1.0).contains(&a.operator_max_share) {
        bail!(
            "--operator-max-share {}: expected 0..1",
            a.operator_max_share
        );
    }
    if a.resume && !a.learn {
        bail!("--resume belongs to --learn");
    }
    let dir = a.out.clone().unwrap_or_else(|| {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("sessions/{}-{unix}", task.name))
    });
    let (mut policy, mut residual) = (a.policy.clone(), a.residual.clone());
    let run_dir = PathBuf::from(&a.policy);
    if !a.learn && run_dir.is_dir() {
        // A run directory: its base, and its trained residual if there is one.
        policy = run_dir.join("base.safetensors").display().to_string();
        let p = run_dir.join("policy.safetensors");
        if residual.is_none() && p.exists() {
            residual = Some(p);
        }
    }
    let learn = a.learn.then(|| LearnSpec {
        from: (!a.resume).then(|| run_dir.clone()),
        dir: dir.clone(),
        resume: a.resume,
        snapshot_every_s: a.snapshot_every.max(0.0),
        utd: Some(a.utd.unwrap_or(8.0)),
        bc_weight: Some(a.bc_weight.unwrap_or(0.4)),
    });
    eprintln!(
        "{} session in {}",
        if a.learn { "learning" } else { "recorded" },
        dir.display()
    );
    let ip = a.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    crate::stop_on_signals();
    let session = TeleopSession::start(&TeleopSpec {
        robot,
        task: task.clone(),
        policy,
        residual,
        servo_rate_hz: a.rate,
        seed: a.seed,
        bind: SocketAddr::new(ip, a.port),
        learn,
        record: Some(dir.clone()),
        record_frames: !a.no_frames,
        success_hold_steps: a.success_hold,
    })?;
    eprintln!(
        "open {} (the token is the access key: keep it to yourself)",
        session.url()
    );
    if !ip.is_loopback() {
        eprintln!("serving on {ip}: every request still needs the token");
    }
    #[cfg(feature = "gamepad")]
    let _pad = if a.gamepad {
        let pad = reflex_teleop::pad::NativePad::open(session.hub().clone())
            .map_err(|e| anyhow::anyhow!(e))?;
        eprintln!("gamepad: {} (hold LB or RB to drive)", pad.name);
        Some(pad)
    } else {
        None
    };
    #[cfg(not(feature = "gamepad"))]
    if a.gamepad {
        bail!("--gamepad: this reflex was built without the `gamepad` feature (cargo build --features gamepad; it needs libudev-dev); the page reads browser gamepads without it");
    }
    let _mouse = if a.spacemouse {
        let m = reflex_teleop::spacemouse::SpaceMouse::open(session.hub().clone())
            .map_err(|e| anyhow::anyhow!(e))?;
        eprintln!("SpaceMouse: {} (deflect the puck to drive)", m.name);
        Some(m)
    } else {
        None
    };
    let started = Instant::now();
    let operator_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let operator = if a.operator == "scripted" {
        let (url, stop, task) = (session.ws_url(), operator_stop.clone(), task.clone());
        let model = reflex_sim::Env::new(task.clone())?.model().clone();
        let rule = OperatorRule {
            max_share: a.operator_max_share,
            patience_steps: a.operator_patience,
            reward_progress: a.operator_reward_progress,
            stall_on_distance: a.operator_stall_on_distance,
            ..Default::default()
        };
        Some(std::thread::spawn(move || {
            run_scripted_operator(&url, &task, &model, rule, &stop)
        }))
    } else {
        None
    };
    let mut last_line = Instant::now();
    let r = session.run_until(|s| {
        if last_line.elapsed().as_secs() >= 30 {
            last_line = Instant::now();
            let rows = s.episodes();
            let recent = &rows[rows.len().saturating_sub(20)..];
            let (steps, held, wins) = recent.iter().fold((0, 0, 0), |(a, b, c), r| {
                (a + r.row.steps, b + r.row.intervened, c + u64::from(r.row.success))
            });
            eprintln!(
                "{:>5.0} s: {} episodes; last {}: {} successes, operator drove {:.0}% of steps; {} updates",
                started.elapsed().as_secs_f64(),
                rows.len(),
                recent.len(),
                wins,
                100.0 * held as f64 / steps.max(1) as f64,
                s.learner().map_or(0, |l| l.updates.load(Ordering::Relaxed)),
            );
        }
        reflex_jobs::train::INTERRUPT.load(Ordering::Relaxed)
            || a.seconds
                .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
            || operator.as_ref().is_some_and(|o| o.is_finished())
    })?;
    operator_stop.store(true, Ordering::Release);
    let operator_report = match operator {
        Some(o) => Some(
            o.join()
                .map_err(|_| anyhow::anyhow!("the scripted operator panicked"))?
                .map_err(|e| anyhow::anyhow!("scripted operator: {e}"))?,
        ),
        None => None,
    };
    if let Some(o) = &operator_report {
        println!(
            "scripted operator: {} takeovers ({} stalls, {} drifts), held {} of {} steps seen",
            o.takeovers, o.stalls, o.drifts, o.steps_held, o.steps_seen
        );
    }
    let rate = if r.policy_steps > 0 {
        100.0 * r.intervened_steps as f64 / r.policy_steps as f64
    } else {
        0.0
    };
    println!(
        "{} episodes, {} successes ({} labelled by the operator); the operator drove {} of {} policy steps ({rate:.1}%); {} e-stops; {} inputs, {} refused",
        r.episodes, r.successes, r.labelled, r.intervened_steps, r.policy_steps, r.estops, r.inputs, r.refused
    );
    match r.frames_recorded {
        Some(n) => println!(
            "camera frames: {n} per camera recorded in {}/cameras ({} steps skipped by a recorder that fell behind)",
            dir.display(),
            r.frames_skipped
        ),
        None if !a.no_frames => println!("camera frames: not recorded (see the warning above)"),
        None => {}
    }
    if let (Some(u), Some(p)) = (r.updates, r.published) {
        println!("learner: {u} updates over the run, {p} weights published to the running policy");
    }
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["operator"] = serde_json::to_value(operator_report)?;
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}

/// Arguments of `reflex replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The session's directory (`reflex teleop --out`).
    session: PathBuf,
    /// Print a JSON report as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run_replay(a: &ReplayArgs) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replaying {bar:30} {pos}/{len} episodes")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = reflex_jobs::teleop::record::replay(&a.session, |done, of| {
        bar.set_length(of);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    println!(
        "{}: {} of {} episodes replayed to the same trajectory hash ({} policy steps)",
        a.session.display(),
        r.matched,
        r.episodes,
        r.steps
    );
    for (episode, steps) in &r.mismatched {
        println!("  episode {episode}: differs (replayed {steps} steps)");
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    if !r.mismatched.is_empty() {
        bail!(
            "{} episodes did not replay to their recorded hash",
            r.mismatched.len()
        );
    }
    Ok(())
}
