//! The `reflex` binary end to end: the commands a newcomer runs first.

use std::process::Command;

fn reflex(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .output()
        .expect("run reflex");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

#[test]
fn sim_reports_the_success_rate_as_json() {
    let (ok, out, err) = reflex(&[
        "sim",
        "--task",
        "pick_cube",
        "--policy",
        "scripted",
        "--episodes",
        "3",
        "--seed",
        "11",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    assert_eq!(v["task"], "pick_cube");
    assert_eq!(v["episodes"], 3);
    assert_eq!(v["success_rate"], 1.0, "{out}");
}

#[test]
fn sim_saves_camera_frames() {
    let dir = std::env::temp_dir().join(format!("reflex-frames-{}", std::process::id()));
    let (ok, _, err) = reflex(&[
        "sim",
        "--task",
        "reach",
        "--episodes",
        "1",
        "--save-frames",
        dir.to_str().unwrap(),
        "--frame-size",
        "32",
    ]);
    assert!(ok, "{err}");
    for f in [
        "ep000_t000_front_rgb.png",
        "ep000_t000_wrist_depth.png",
        "ep000_t000_front_seg.png",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_task_file_fails_with_the_file_and_field_named() {
    let path = std::env::temp_dir().join(format!("reflex-bad-task-{}.toml", std::process::id()));
    std::fs::write(&path, "name = \"x\"\nepisode_steps = 0\n[success]\nkind = \"near\"\na = \"tcp\"\nb = \"tcp\"\ntolerance_m = 0.1\n[reward]\nterms = [{ name = \"s\", kind = \"success\" }]\n").unwrap();
    let (ok, _, err) = reflex(&["sim", "--task", path.to_str().unwrap(), "--episodes", "1"]);
    std::fs::remove_file(&path).unwrap();
    assert!(!ok);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("episode_steps"),
        "{err}"
    );
}

#[test]
fn bench_sim_prints_the_promised_fields() {
    let (ok, out, err) = reflex(&[
        "bench",
        "sim",
        "--task",
        "reach",
        "--seconds",
        "0.2",
        "--frame-size",
        "32",
        "--num-envs",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    for k in [
        "physics_steps_per_s",
        "env_steps_per_s_state",
        "env_steps_per_s_camera",
        "vec_env_steps_per_s",
    ] {
        assert!(
            v[k].as_f64().is_some_and(|x| x > 0.0),
            "{k} missing or zero: {out}"
        );
    }
}

#[test]
fn bench_policy_prints_the_promised_fields() {
    let (ok, out, err) = reflex(&["bench", "policy", "--samples", "2000", "--json"]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {out}"))
    };
    assert!(0.0 < f("p50_us") && f("p50_us") <= f("p99_us"), "{out}");
    assert!(0.0 < f("servo_tick_p50_us") && f("servo_tick_p50_us") <= f("servo_tick_p99_us"));
    assert!(f("policy_tick_p50_us") <= f("policy_tick_p99_us"), "{out}");
    // A tick with a policy step runs two networks more than a servo tick.
    assert!(f("policy_tick_p50_us") > f("servo_tick_p50_us"), "{out}");
    // 1 kHz loop, 100 Hz policy: every tenth tick is a policy step.
    assert_eq!(v["policy_ticks"], 200, "{out}");
}

#[test]
fn bench_loop_prints_the_promised_fields() {
    let (ok, out, err) = reflex(&[
        "bench",
        "loop",
        "--rate",
        "500",
        "--seconds",
        "2",
        "--load",
        "--no-realtime",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {out}"))
    };
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {out}"))
    };
    assert_eq!(n("ticks"), 1000, "{out}");
    assert!(n("deadline_misses") <= n("ticks"));
    assert!(
        n("late_50pct") <= n("late_10pct") && n("late_10pct") <= n("ticks"),
        "{out}"
    );
    assert!(f("jitter_p50_us") <= f("jitter_p99_us") && f("jitter_p99_us") <= f("jitter_max_us"));
    assert!(
        f("compute_p50_us") <= f("compute_p99_us") && f("compute_p99_us") <= f("compute_max_us")
    );
    // The real runtime ran: 500 Hz loop, 50 Hz policy, every judged step went out and was
    // drained, the residual's weights were swapped while it ran, an operator took over.
    assert_eq!(n("policy_steps"), 100, "{out}");
    assert_eq!(n("transitions"), 99, "{out}");
    assert_eq!(n("transitions_refused"), 0, "{out}");
    assert!(
        n("weight_swaps") > 10 && n("residual_version") == n("weight_swaps"),
        "{out}"
    );
    assert!(
        n("intervened_steps") > 0 && n("operator_messages") > 0,
        "{out}"
    );
    assert!(n("learner_forward_passes") > 0, "the learner ran: {out}");
    // VLM questions were in flight over HTTP while the loop ran, and answers came back.
    assert!(v["vlm_in_flight_max"].as_u64().unwrap() >= 2, "{out}");
    assert!(v["reward_answers"].as_u64().unwrap() >= 1, "{out}");
}

#[test]
fn run_drives_the_simulated_arm_through_the_runtime_in_real_time() {
    let (ok, out, err) = reflex(&[
        "run",
        "--task",
        "reach",
        "--rate",
        "500",
        "--seconds",
        "4",
        "--no-realtime",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    for key in [
        "episodes",
        "successes",
        "success_rate",
        "ticks",
        "deadline_misses",
        "jitter_p50_us",
        "jitter_p99_us",
        "jitter_max_us",
        "compute_p50_us",
        "compute_p99_us",
        "transitions",
        "transitions_dropped",
        "faults",
    ] {
        assert!(!v[key].is_null(), "missing {key}: {out}");
    }
    assert!(v["episodes"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(v["successes"], v["episodes"], "{out}");
    assert!(v["ticks"].as_u64().unwrap() > 100, "{out}");
    assert_eq!(v["transitions_dropped"], 0, "{out}");
    assert_eq!(v["faults"]["estop"], 0, "nothing pressed the e-stop");
    assert_eq!(v["stop_reason"], "time", "{out}");
}

/// SIGTERM presses `reflex run`'s e-stop: the episode is aborted, the arm brakes to rest within
/// its limits, and the command exits cleanly with its report.
#[test]
fn sigterm_brakes_reflex_run_to_rest_before_it_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["run", "--task", "reach", "--rate", "500", "--seconds", "60"])
        .args(["--no-realtime", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let t0 = std::time::Instant::now();
    let status = signal_and_wait(&mut child, libc::SIGTERM, 30);
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed().as_secs() < 20, "stopped long before its 60 s");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let v = last_json(&out);
    assert_eq!(v["stop_reason"], "e-stop", "{out}");
    assert_eq!(v["estop_pressed"], true, "{out}");
    assert_eq!(v["at_rest_after_estop"], true, "{out}");
    assert!(v["faults"]["estop"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(v["estop_aborts"], 1, "{out}");
}

#[test]
fn run_unpaced_gives_many_episodes_and_the_expert_succeeds() {
    let (ok, out, err) = reflex(&[
        "run",
        "--task",
        "pick_cube",
        "--seconds",
        "3",
        "--unpaced",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = last_json(&out);
    let episodes = v["episodes"].as_u64().unwrap();
    assert!(episodes >= 3, "{out}");
    assert!(v["success_rate"].as_f64().unwrap() >= 0.8, "{out}");
}

#[test]
fn run_refuses_a_residual_of_the_wrong_shape_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("reflex-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("residual.safetensors");
    reflex_runtime::Mlp::zeros(
        &[10, 16, 7],
        reflex_runtime::Activation::Relu,
        reflex_runtime::Activation::Tanh,
    )
    .save(&path)
    .unwrap();
    let (ok, _, err) = reflex(&[
        "run",
        "--task",
        "reach",
        "--residual",
        path.to_str().unwrap(),
        "--seconds",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("residual.safetensors"), "{err}");
    assert!(err.contains("takes 10 inputs"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reflex train --seeds`: each seed's run in its own directory, then the study over them
/// (held-out mean and bootstrap interval, band plot); `--resume` keeps finished seeds.
#[test]
fn train_seeds_writes_each_run_and_the_study() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.toml");
    std::fs::write(
        &cfg,
        "task = \"reach\"\ndemo_episodes = 3\nmax_env_steps = 100\neval_every = 100\neval_episodes = 2\n\
         heldout_episodes = 4\ntarget_success = 0.0\nconfirm_episodes = 2\n[bc]\nhidden = [16, 16]\n\
         steps = 50\n[agent]\nhidden = [16, 16]\n\
         [learner]\nbatch_size = 16\nlearning_starts = 16\ncritic_warmup_updates = 5\n",
    )
    .unwrap();
    let study = dir.join("study");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            study.to_str().unwrap(),
            "--seeds",
            "4,7",
            "--json",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        reflex(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A count of 0 gives no seeds; the error says how to run one.
    let (ok, _, err) = reflex(&["train", "--seeds", "0"]);
    assert!(!ok && err.contains("--seed S"), "{err}");
    let (ok, out, err) = run(&[]);
    assert!(ok, "{err}");
    let st = last_json(&out);
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{st}");
    let mut rates = Vec::new();
    for (r, seed) in runs.iter().zip([4, 7]) {
        assert_eq!(r["seed"], seed, "{st}");
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(study.join(format!("s{seed}/summary.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["seed"], seed);
        assert_eq!(s["heldout"]["episodes"], 4, "{s}");
        rates.push(s["heldout"]["success_rate"].as_f64().unwrap());
    }
    let h = &st["heldout_success"];
    assert_eq!(h["n"], 2, "{st}");
    let mean = h["mean"].as_f64().unwrap();
    assert!((mean - (rates[0] + rates[1]) / 2.0).abs() < 1e-12, "{st}");
    let (lo, hi) = (h["lo"].as_f64().unwrap(), h["hi"].as_f64().unwrap());
    assert!(lo <= mean && mean <= hi, "{st}");
    assert!(
        lo >= rates[0].min(rates[1]) && hi <= rates[0].max(rates[1]),
        "{st}"
    );
    assert_eq!(st["heldout_episodes"], 4);
    // Every evaluation reaches a target of 0 and is confirmed on 2 fresh scenes; the study
    // reports the gap between the two over both runs.
    for r in runs {
        let c = r["confirmations"].as_array().unwrap();
        assert_eq!(c.len(), 1, "{st}");
        assert_eq!(
            (c[0]["episodes"].as_u64(), c[0]["passed"].as_bool()),
            (Some(2), Some(true))
        );
    }
    assert_eq!(st["selection_gap"]["n"], 2, "{st}");
    assert!(
        out.contains("minus its confirmation on fresh scenes"),
        "{out}"
    );
    assert_eq!(
        out.matches("confirmed on 2 fresh scenes: ").count(),
        2,
        "{out}"
    );
    assert!(study.join("study.json").exists() && study.join("band.png").exists());
    assert!(out.contains("held-out success (4 episodes each)"), "{out}");
    // Resuming a finished study trains nothing again and gives the same study.
    let (ok, out2, err) = run(&["--resume"]);
    assert!(ok, "{err}");
    assert_eq!(out2.matches("finished before, kept").count(), 2, "{out2}");
    assert_eq!(last_json(&out2), st);
    // `reflex study` reads the same runs.
    let (ok, out3, err) = reflex(&[
        "study",
        study.join("s4").to_str().unwrap(),
        study.join("s7").to_str().unwrap(),
        "--out",
        dir.join("again").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(last_json(&out3)["heldout_success"], st["heldout_success"]);
    // The sparse baseline: the task's success alone; a study does not mix it with the
    // task's shaped reward.
    let sparse = dir.join("sparse");
    let (ok, out4, err) = reflex(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        sparse.to_str().unwrap(),
        "--reward",
        "sparse",
        "--json",
    ]);
    assert!(ok, "{err}");
    let s = last_json(&out4);
    assert_eq!(s["reward"], "sparse", "{s}");
    let st4 = &s["reward_stage"]["sparse"];
    assert!(st4["steps"].as_u64().unwrap() >= 100, "{s}");
    assert_eq!(st4["success_reward"], 10.0, "{s}");
    let (ok, _, err) = reflex(&[
        "study",
        study.join("s4").to_str().unwrap(),
        sparse.to_str().unwrap(),
        "--out",
        dir.join("mixed").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("reward `sparse`") && err.contains("reward `task`"),
        "{err}"
    );
    // Bad lists are refused by name.
    for (bad, says) in [
        ("4,4", "twice"),
        ("x", "`x` is not a seed"),
        ("0", "no seeds"),
    ] {
        let mut a = args(&[]);
        a[6] = bad.into();
        let (ok, _, err) = reflex(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!ok && err.contains(says), "{bad}: {err}");
    }
    let (ok, _, err) = run(&["--seed", "1"]);
    assert!(!ok && err.contains("--seed"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tiny `reflex train` from a config file, then `reflex eval` on its run directory.
#[test]
fn train_writes_a_run_that_eval_reads() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.toml");
    std::fs::write(
        &cfg,
        "task = \"reach\"\ndemo_episodes = 3\nmax_env_steps = 150\neval_every = 100\neval_episodes = 3\nheldout_episodes = 3\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n",
    )
    .unwrap();
    let run = dir.join("run");
    let (ok, out, err) = reflex(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--seed",
        "3",
        "--json",
    ]);
    assert!(ok, "{err}");
    let s = last_json(&out);
    assert_eq!(s["task"], "reach");
    assert_eq!(s["seed"], 3);
    assert!(!s["commit"].as_str().unwrap().is_empty(), "{s}");
    assert_eq!(s["config"]["task"], "reach", "the resolved config: {s}");
    let scalars = std::fs::read_to_string(run.join("scalars.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(scalars.lines().last().unwrap()).unwrap();
    assert!(last["charts/success_rate"].is_number(), "{last}");
    assert!(last["losses/critic_td_mse"].is_number(), "{last}");
    assert!(
        scalars.lines().any(|l| l.contains("\"reward/reach\"")),
        "the task's terms by name: {scalars}"
    );
    assert!(s["env_steps"].as_u64().unwrap() >= 150, "{s}");
    assert!(s["updates"].as_u64().unwrap() > 0, "{s}");
    for f in [
        "summary.json",
        "metrics.csv",
        "curve.png",
        "base.safetensors",
        "policy.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().count() >= 3, "{csv}");

    let eval = || {
        let (ok, out, err) = reflex(&[
            "eval",
            "--task",
            "reach",
            "--policy",
            run.to_str().unwrap(),
            "--episodes",
            "3",
            "--json",
        ]);
        assert!(ok, "{err}");
        last_json(&out)
    };
    let e = eval();
    let rate = e["success_rate"].as_f64().unwrap();
    assert_eq!(e["episodes"], 3);
    // By default `reflex eval` judges the held-out scenes, as the run's own held-out
    // evaluation did: the same figure, kept apart from the stopping evaluations.
    assert_eq!(e["heldout"], true, "{e}");
    let h = &s["heldout"];
    assert_eq!(h["episodes"], 3, "{s}");
    assert_eq!(h["first_seed"].as_u64(), Some(1 << 62), "{s}");
    assert_eq!(h["success_rate"], e["success_rate"], "{s}\n{e}");
    assert!(s["final_success_rate"].is_number(), "{s}");
    assert!(
        (rate * 3.0 - (rate * 3.0).round()).abs() < 1e-9 && (0.0..=1.0).contains(&rate),
        "a share of 3 episodes: {e}"
    );
    assert!(e["mean_return"].as_f64().unwrap().abs() > 0.0, "{e}");
    // The same seeds give the same evaluation.
    assert_eq!(eval(), e);
    // The policy files carry their metadata: `reflex run` takes the residual scale and the
    // loop rate from them, and refuses them on a task with another observation layout.
    let (base, res) = (run.join("base.safetensors"), run.join("policy.safetensors"));
    let (ok, out, err) = reflex(&[
        "run",
        "--task",
        "reach",
        "--policy",
        base.to_str().unwrap(),
        "--residual",
        res.to_str().unwrap(),
        "--seconds",
        "0.3",
        "--unpaced",
        "--no-realtime",
        "--json",
    ]);
    assert!(ok, "{err}");
    let r = last_json(&out);
    assert_eq!(
        r["rate_hz"], 500.0,
        "the rate the files were trained at: {r}"
    );
    assert!(
        (r["residual_scale"].as_f64().unwrap() - 0.3).abs() < 1e-6,
        "{r}"
    );
    let (ok, _, err) = reflex(&[
        "run",
        "--task",
        "pick_cube",
        "--residual",
        res.to_str().unwrap(),
        "--seconds",
        "0.3",
        "--unpaced",
        "--no-realtime",
    ]);
    assert!(
        !ok && err.contains("policy.safetensors")
            && err.contains("observation layout")
            && err.contains("`pick_cube`"),
        "{err}"
    );
    let (ok, _, err) = reflex(&[
        "run",
        "--task",
        "reach",
        "--residual",
        res.to_str().unwrap(),
        "--residual-scale",
        "0.2",
        "--seconds",
        "0.3",
        "--unpaced",
        "--no-realtime",
    ]);
    assert!(!ok && err.contains("0.3"), "{err}");
    // The run's own config decides; another task, or a run without its config, is refused.
    let (ok, _, err) = reflex(&["eval", "--task", "push", "--policy", run.to_str().unwrap()]);
    assert!(
        !ok && err.contains("config.toml") && err.contains("`reach`"),
        "{err}"
    );
    std::fs::rename(run.join("config.toml"), run.join("config.away")).unwrap();
    let (ok, _, err) = reflex(&["eval", "--policy", run.to_str().unwrap()]);
    assert!(
        !ok && err.contains("config.toml") && err.contains("missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reflex train --reward vlm-keypoints` without `--vlm-url` asks the built-in oracle over
/// loopback HTTP at every reset, and the summary shows the plans, the rewarded transitions and
/// the VLM counters; `--reward classifier` without a classifier is refused naming the flag.
#[test]
fn train_with_vlm_keypoints_from_the_built_in_oracle() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-kp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.toml");
    std::fs::write(
        &cfg,
        "task = \"pick_cube\"\ndemo_episodes = 2\nmax_env_steps = 400\neval_every = 400\neval_episodes = 2\nheldout_episodes = 0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n",
    )
    .unwrap();
    let run = dir.join("run");
    let args = |reward: &'static str| {
        vec![
            "train".to_owned(),
            "--config".into(),
            cfg.to_str().unwrap().into(),
            "--out".into(),
            run.to_str().unwrap().into(),
            "--reward".into(),
            reward.into(),
            "--json".into(),
        ]
    };
    let a = args("vlm-keypoints");
    let (ok, out, err) = reflex(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let s = last_json(&out);
    assert_eq!(s["reward"], "vlm-keypoints", "{s}");
    let k = &s["reward_stage"]["keypoints"];
    let v = &s["reward_stage"]["vlm"];
    assert!(k["planned"].as_u64().unwrap() >= 2, "{s}");
    assert!(k["rewarded"].as_u64().unwrap() >= 200, "{s}");
    assert!(v["queries"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(v["failed"], 0, "{s}");
    assert!(s["deadline_misses"].is_u64(), "{s}");
    assert!(out.contains("rewards from vlm-keypoints"), "{out}");
    let clean_planned = k["planned"].as_u64().unwrap();

    // The built-in oracle configured from the file: an oracle that always hedges gives no
    // plan, so the stage drops every episode it asked about and plans none (in a run
    // directory of its own: the first run's answers are cached in its directory). No step is
    // rewarded, so the step budget is never reached: the time budget ends it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("minutes = 0.4\n{text}[reward.oracle]\nnoise = 1.0\nnoise_modes = [\"hedge\"]\n"),
    )
    .unwrap();
    let mut a = a.clone();
    a[4] = dir.join("run-hedged").to_str().unwrap().into();
    let (ok, out, err) = reflex(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let s = last_json(&out);
    let k = &s["reward_stage"]["keypoints"];
    assert_eq!(k["planned"], 0, "{s}");
    assert!(
        k["failed_answers"].as_u64().unwrap() + k["expired"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert!(clean_planned >= 2);
    assert_eq!(k["rewarded"], 0, "{s}");
    assert!(
        err.contains("the reward source rewarded no step in the last 50 episodes"),
        "the run says its reward source is failing: {err}"
    );
    std::fs::write(
        &cfg,
        format!("{text}[reward.oracle]\nnoise_modes = [\"sideways\"]\n"),
    )
    .unwrap();
    let (ok, _, err) = reflex(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && err.contains("sideways") && err.contains("tiny.toml"),
        "{err}"
    );
    std::fs::write(&cfg, text).unwrap();

    let a = args("classifier");
    let (ok, _, err) = reflex(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("--classifier"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `[reward] source = "vlm-preference"` in the config file: the hook pools frames of the
/// training episodes, asks the built-in oracle for labels in rounds, the model trains after each
/// round and the replay is reshaped; the summary shows it. A misspelt `[reward]` key is refused
/// naming the file and the key.
#[test]
fn train_with_vlm_preference_from_the_config_file() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-pref-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("pref.toml");
    let common = "task = \"pick_cube\"\ndemo_episodes = 2\nmax_env_steps = 600\neval_every = 600\neval_episodes = 2\nheldout_episodes = 0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\nlockstep = true\n";
    std::fs::write(
        &cfg,
        format!(
            "{common}[reward]\nsource = \"vlm-preference\"\n\
             [reward.preference]\nwidth = 64\nheight = 48\nframe_every = 3\nround_every = 200\n\
             pairs_per_round = 60\nmax_labels = 120\n"
        ),
    )
    .unwrap();
    let run = dir.join("run");
    let (ok, out, err) = reflex(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let s = last_json(&out);
    assert_eq!(s["reward"], "vlm-preference", "{s}");
    let p = &s["reward_stage"]["preference"];
    assert_eq!(p["asked"], 120, "{s}");
    assert!(p["labels"].as_u64().unwrap() >= 100, "{s}");
    assert_eq!(p["failed"], 0, "{s}");
    assert!(
        s["reward_stage"]["replay_reshapes"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert!(out.contains("rewards from vlm-preference"), "{out}");
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(written.contains("vlm-preference"), "{written}");

    std::fs::write(&cfg, format!("{common}[reward]\nsorce = \"classifier\"\n")).unwrap();
    let (ok, _, err) = reflex(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("pref.toml") && err.contains("sorce"), "{err}");
    // Read when the file is, not when the source is used: a nested table is checked too.
    std::fs::write(
        &cfg,
        format!("{common}[reward.keypoints]\ngrid_colls = 4\n"),
    )
    .unwrap();
    let (ok, _, err) = reflex(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("pref.toml") && err.contains("grid_colls"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reflex classifier train` writes the classifier and its report, `reflex classifier eval`
/// reads it back, and a directory without one is refused naming the file.
#[test]
fn classifier_train_then_eval() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-clf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("clf");
    let o = out.to_str().unwrap();
    let (ok, stdout, err) = reflex(&[
        "classifier",
        "train",
        "--episodes",
        "3",
        "--heldout-episodes",
        "2",
        "--epochs",
        "1",
        "--size",
        "32",
        "--out",
        o,
        "--json",
    ]);
    assert!(ok, "{err}");
    let r = last_json(&stdout);
    assert!(r["heldout"]["frames"].as_u64().unwrap() > 0, "{r}");
    for f in ["classifier.safetensors", "classifier.json", "report.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let (ok, stdout, err) = reflex(&[
        "classifier",
        "eval",
        "--model",
        o,
        "--episodes",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let a = last_json(&stdout);
    assert!(
        (0.0..=1.0).contains(&a["accuracy"].as_f64().unwrap()),
        "{a}"
    );
    // The ends replayed for each default window, over the same two episodes.
    let ends = a["ends"].as_array().unwrap();
    let windows: Vec<u64> = ends.iter().map(|e| e["window"].as_u64().unwrap()).collect();
    assert_eq!(windows, [1, 2, 3, 4], "{a}");
    assert!(ends.iter().all(|e| e["episodes"] == 2), "{a}");
    let (ok, _, err) = reflex(&["classifier", "eval", "--model", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("classifier.json"), "{err}");

    // The classifier as the training reward: every step's frame is judged (joined to its own
    // transition by episode and step), none is lost or left waiting.
    let cfg = dir.join("tiny.toml");
    std::fs::write(
        &cfg,
        "task = \"pick_cube\"\ndemo_episodes = 2\nmax_env_steps = 300\neval_every = 300\neval_episodes = 2\nheldout_episodes = 0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\nlockstep = true\n",
    )
    .unwrap();
    let (ok, stdout, err) = reflex(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
        "--reward",
        "classifier",
        "--classifier",
        o,
        "--json",
    ]);
    assert!(ok, "{err}");
    let s = last_json(&stdout);
    assert_eq!(s["reward"], "classifier", "{s}");
    let c = &s["reward_stage"]["classifier"];
    let judged = c["rewarded"].as_u64().unwrap();
    assert!(judged >= 300, "{s}");
    assert_eq!(c["frames_sent"].as_u64().unwrap(), judged, "{s}");
    for k in ["frames_lost", "expired", "orphan_frames"] {
        assert_eq!(c[k], 0, "{k}: {s}");
    }
    assert_eq!(s["reward_stage"]["held_now"], 0, "{s}");
    assert_eq!(
        c["episodes_ended"], 0,
        "the robot's judge ends episodes: {s}"
    );

    // HIL-SERL's use: the classifier's verdict ends each training episode. At threshold 0
    // every frame is a success: each episode ends one step after its first verdict, and the
    // frame after that confirms it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}[reward.classifier_stage]\nterminate = true\nthreshold = 0.0\n"),
    )
    .unwrap();
    let (ok, stdout, err) = reflex(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.join("run-ends").to_str().unwrap(),
        "--reward",
        "classifier",
        "--classifier",
        o,
        "--json",
    ]);
    assert!(ok, "{err}");
    let s = last_json(&stdout);
    let c = &s["reward_stage"]["classifier"];
    let episodes = s["episodes"].as_u64().unwrap();
    let ended = c["episodes_ended"].as_u64().unwrap();
    // (The last episode may still be in flight at the step budget.)
    assert!(ended + 1 >= episodes && episodes >= 100, "{s}");
    assert_eq!(c["ends_confirmed"], ended, "{s}");
    assert_eq!(c["ends_relabelled"], 0, "{s}");
    assert_eq!(c["verdicts_late"], 0, "{s}");
    assert_eq!(s["reward_stage"]["terminate"], true, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ctrl-C during training ends the run cleanly: exit status 0, and the summary, curve, metrics
/// and final policy are all written.
#[test]
fn ctrl_c_ends_training_with_every_output_written() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("long.toml");
    std::fs::write(
        &cfg,
        "task = \"reach\"\ndemo_episodes = 3\nminutes = 10.0\neval_episodes = 3\nheldout_episodes = 0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n",
    )
    .unwrap();
    let run = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["train", "--config", cfg.to_str().unwrap(), "--out"])
        .arg(&run)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Training has begun once the base's evaluation is on disk (bounded wait).
    let t0 = std::time::Instant::now();
    while !run.join("metrics.csv").exists() {
        assert!(t0.elapsed().as_secs() < 120, "training never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = interrupt_and_wait(&mut child, 60);
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let s = last_json(&out);
    assert!(s["env_steps"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["stop_reason"], "interrupted", "{s}");
    for f in [
        "summary.json",
        "metrics.csv",
        "curve.png",
        "policy.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad field in a training config is refused naming the file and the field.
#[test]
fn a_bad_training_config_names_file_and_field() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[learner]\nn_step = 9\n").unwrap();
    let (ok, _, err) = reflex(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml") && err.contains("learner.n_step"),
        "{err}"
    );
    std::fs::write(&cfg, "[agent]\ncritcs = 4\n").unwrap();
    let (ok, _, err) = reflex(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("critcs"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reflex vlm-oracle` serves real HTTP on loopback: the VLM client gets an answer from it,
/// bad flags are refused by name, and Ctrl-C stops it cleanly.
#[test]
fn vlm_oracle_answers_the_client_and_stops_on_ctrl_c() {
    use reflex_reward::parse::Preference;
    use reflex_reward::vlm::{Answer, Png, Query, Request, VlmClient, VlmConfig};
    use std::io::BufRead;

    let (ok, _, err) = reflex(&["vlm-oracle", "--port", "0", "--noise", "1.5"]);
    assert!(!ok && err.contains("--noise"), "{err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["vlm-oracle", "--port", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = serde_json::from_str::<serde_json::Value>(&line).unwrap()["base_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    let client = VlmClient::start(VlmConfig {
        base_url,
        timeout_s: 5.0,
        ..Default::default()
    })
    .unwrap();
    let img = std::sync::Arc::new(Png::encode_rgb(2, 2, &[0; 12]).unwrap());
    client
        .submit(Request {
            id: 42,
            query: Query::Preference {
                first: img.clone(),
                second: img,
                instruction: "lift the cube".into(),
            },
            hint: Some(serde_json::json!({ "progress": [0.9, 0.1] })),
        })
        .unwrap();
    let reply = client
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("no reply");
    assert_eq!(reply.id, 42);
    assert_eq!(reply.result, Ok(Answer::Preference(Preference::First)));
    client.shutdown();

    let status = interrupt_and_wait(&mut child, 20);
    assert!(status.success(), "{status:?}");
}

/// Sends Ctrl-C (SIGINT) to `child` and waits for it to exit, killing it and failing the test
/// after `limit_s` seconds.
fn interrupt_and_wait(child: &mut std::process::Child, limit_s: u64) -> std::process::ExitStatus {
    signal_and_wait(child, libc::SIGINT, limit_s)
}

/// Sends `signal` to `child` and waits for it to exit, killing it and failing the test after
/// `limit_s` seconds.
fn signal_and_wait(
    child: &mut std::process::Child,
    signal: libc::c_int,
    limit_s: u64,
) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed().as_secs() > limit_s {
            let _ = child.kill();
            panic!("the process did not stop within {limit_s} s of signal {signal}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn export_of_a_directory_that_holds_no_session_names_the_missing_file() {
    let missing = std::env::temp_dir().join(format!("reflex-no-session-{}", std::process::id()));
    let out = missing.join("dataset");
    let (ok, _, err) = reflex(&[
        "export",
        "lerobot",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    if cfg!(feature = "lerobot") {
        let header = missing.join("header.json");
        assert!(err.contains(header.to_str().unwrap()), "{err}");
    } else {
        assert!(err.contains("--features lerobot"), "{err}");
    }
    assert!(!out.exists(), "nothing written");
}
