//! A real crash test: `reflex train` is killed with SIGKILL at random moments, several times,
//! and resumed each time. After every kill the replay holds at least every step that
//! `progress.json` reported as synced before it, every record the previous round left is still
//! there, unchanged and in order, no step is stored twice, and the step counters carry on; a
//! last resume runs to the end of the step budget. A resume that silently started over (wiping
//! the replay) fails the prefix check; one that repeated steps fails the uniqueness check.

use reflex_learn::replay::{Source, Step};
use reflex_learn::store::ReplayLog;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads the replay of a run directory (as a resume would: a torn tail is cut).
fn replay(run: &Path) -> Vec<Step> {
    let dir = run.join("replay");
    let header = std::fs::read(dir.join("000000.seg")).expect("a replay segment");
    let obs = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
    let act = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    let (_, steps, _) = ReplayLog::open(&dir, obs, act).expect("the replay opens");
    steps
}

fn progress(run: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("progress.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn key(s: &Step) -> (bool, u64, u64) {
    (s.source == Source::Demo, s.episode, s.step)
}

fn online(steps: &[Step]) -> usize {
    steps.iter().filter(|s| s.source != Source::Demo).count()
}

#[test]
fn train_killed_at_random_moments_resumes_without_losing_or_repeating_steps() {
    let dir = std::env::temp_dir().join(format!("reflex-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("crash.toml");
    std::fs::write(
        &cfg,
        "task = \"reach\"\ndemo_episodes = 3\nmax_env_steps = 3000\neval_every = 100000\n\
         eval_episodes = 2\nheldout_episodes = 0\ntarget_success = 2.0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n\
         checkpoint_every = 300\n",
    )
    .unwrap();
    let run = dir.join("run");
    let reflex = |resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reflex"));
        c.args(["train", "--config", cfg.to_str().unwrap(), "--out"])
            .arg(&run)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c.spawn().unwrap()
    };
    // Kill moments: pseudo-random, from the process id (a different schedule every run).
    let mut x = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut before: Vec<Step> = Vec::new();
    let mut online_before = 0;
    for round in 0..3 {
        let mut child = reflex(round > 0);
        // Wait until this round has synced records past where the last one stopped (bounded:
        // steps still in memory may die with the process), then let it run a random while
        // longer and kill it.
        let t0 = Instant::now();
        loop {
            let synced = progress(&run)
                .and_then(|p| p["replay_synced"].as_u64())
                .unwrap_or(0);
            if synced > before.len() as u64 && run.join("checkpoints").exists() {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the run ended before it could be killed"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "round {round}: no progress"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(200 + x % 2500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let synced = progress(&run).unwrap()["replay_synced"].as_u64().unwrap() as usize;
        let now = replay(&run);
        eprintln!(
            "round {round}: killed; {} records on disk ({} online), {synced} reported synced",
            now.len(),
            online(&now)
        );
        assert!(
            now.len() >= synced,
            "round {round}: {} records on disk, {synced} were reported synced",
            now.len()
        );
        assert!(
            now.len() >= before.len() && now[..before.len()] == before[..],
            "round {round}: the records of the previous round are not all there, in order"
        );
        let keys: HashSet<_> = now.iter().map(key).collect();
        assert_eq!(
            keys.len(),
            now.len(),
            "round {round}: a step is stored twice"
        );
        assert!(
            online(&now) > online_before,
            "round {round}: no new online step ({} then {})",
            online_before,
            online(&now)
        );
        online_before = online(&now);
        before = now;
    }

    // The last resume runs to the end of the budget.
    let child = reflex(true);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let s: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a summary line")).unwrap();
    assert_eq!(s["stop_reason"], "step budget", "{s}");
    let end = replay(&run);
    eprintln!(
        "finished: {} records ({} online); {s}",
        end.len(),
        online(&end)
    );
    assert!(
        end[..before.len()] == before[..],
        "the final run kept every record"
    );
    let keys: HashSet<_> = end.iter().map(key).collect();
    assert_eq!(keys.len(), end.len(), "a step is stored twice");
    assert_eq!(
        s["env_steps"].as_u64().unwrap() as usize,
        online(&end),
        "the step counter is the replay's online steps, across every restart"
    );
    assert!(s["env_steps"].as_u64().unwrap() >= 3000, "{s}");
    assert_eq!(
        s["replay_records"].as_u64().unwrap() as usize,
        end.len(),
        "{s}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
