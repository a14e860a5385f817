//! A learner and its actors as separate processes on separate "machines": each actor in a
//! network namespace of its own, joined to the learner's by a veth pair, all inside a
//! namespace that holds nothing but them (no traffic leaves it). Mid-run: the learner is
//! killed with SIGKILL and restarted from its run directory, an actor is killed, a new one
//! joins, and one actor's link is cut for four seconds. Afterwards the replay is checked
//! against what the actors sent: no step stored twice, every stream's episodes without holes,
//! everything the surviving actors had acknowledged stored, the run finished, and every actor
//! on the newest weights.

#![cfg(feature = "fleet")]

use reflex_learn::replay::{Source, Step};
use reflex_learn::store::ReplayLog;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 7447;

fn replay(run: &Path) -> Vec<Step> {
    let dir = run.join("replay");
    let header = std::fs::read(dir.join("000000.seg")).expect("a replay segment");
    let obs = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
    let act = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    let (_, steps, _) = ReplayLog::open(&dir, obs, act).expect("the replay opens");
    steps
}

fn json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn env_steps(run: &Path) -> u64 {
    json(&run.join("progress.json"))
        .and_then(|p| p["env_steps"].as_u64())
        .unwrap_or(0)
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "`{cmd}` failed");
}

/// Waits (bounded) until `done`; fails naming `what`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Fleet {
    dir: PathBuf,
    cfg: PathBuf,
    run: PathBuf,
}

impl Fleet {
    fn learner(&self, resume: bool, max_steps: Option<u64>) -> Child {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reflex"));
        c.args(["learner", "--config", self.cfg.to_str().unwrap(), "--out"])
            .arg(&self.run)
            .args(["--listen", &format!("tcp/0.0.0.0:{PORT}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join(format!("learner-{resume}.log"))).unwrap(),
            ));
        if resume {
            c.arg("--resume");
        }
        if let Some(n) = max_steps {
            c.args(["--max-env-steps", &n.to_string()]);
        }
        c.spawn().unwrap()
    }

    /// An actor on a machine of its own: a new network namespace whose only link is a veth
    /// pair to the learner's (10.77.N.2 there, 10.77.N.1 here). Returns the process and the
    /// name of the link's end on the learner's side.
    fn actor(&self, n: u8) -> (Child, String) {
        let name = format!("a{n}");
        let out = self.dir.join(&name);
        // The actor starts once its link has its address (the learner may not be up yet: it
        // keeps trying on its own).
        let script = "ip link set lo up; \
             for i in $(seq 100); do ip -4 addr show dev eth0 2>/dev/null | grep -q inet && break; sleep 0.05; done; \
             exec \"$0\" \"$@\"";
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", script, env!("CARGO_BIN_EXE_reflex")])
            .args([
                "actor",
                "--config",
                self.cfg.to_str().unwrap(),
                "--task",
                "reach",
            ])
            .args(["--connect", &format!("tcp/10.77.{n}.1:{PORT}")])
            .args(["--name", &name, "--seed", &n.to_string(), "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap(),
            ))
            .spawn()
            .unwrap();
        let host = format!("veth{n}");
        let pid = child.id();
        // `unshare` may not have made the namespace yet: wait until the process is in another.
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
        wait_for("the actor's namespace", Duration::from_secs(10), || {
            ns(&pid.to_string()).is_some_and(|n| Some(n) != ns("self"))
        });
        sh(&format!(
            "ip link add {host} type veth peer name eth0 netns {pid} && \
             ip addr add 10.77.{n}.1/24 dev {host} && ip link set {host} up && \
             nsenter -t {pid} -n sh -c 'ip addr add 10.77.{n}.2/24 dev eth0 && ip link set eth0 up'"
        ));
        (child, host)
    }

    fn report(&self, n: u8) -> serde_json::Value {
        json(&self.dir.join(format!("a{n}")).join("actor.json"))
            .unwrap_or_else(|| panic!("actor a{n} wrote no actor.json"))
    }
}

fn finish(mut c: Child, what: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = c.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_fleet_survives_a_killed_learner_a_killed_actor_a_new_actor_and_a_cut_link() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_fleet_survives_a_killed_learner_a_killed_actor_a_new_actor_and_a_cut_link",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("reflex-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("fleet.toml");
    std::fs::write(
        &cfg,
        "task = \"reach\"\ndemo_episodes = 3\neval_every = 1000000\neval_episodes = 2\nheldout_episodes = 0\n\
         target_success = 2.0\nminutes = 5.0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n\
         [agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n\
         checkpoint_every = 300\n\
         [fleet]\nbatch_transitions = 64\nresend_after_ms = 1000\nack_interval_ms = 100\n\
         wait_for_learner_s = 60.0\n",
    )
    .unwrap();
    let f = Fleet {
        run: dir.join("run"),
        dir: dir.clone(),
        cfg,
    };
    let limit = Duration::from_secs(90);

    let mut l1 = f.learner(false, None);
    let (a1, link1) = f.actor(1);
    let (mut a2, _) = f.actor(2);
    wait_for("the first learner to take 800 steps", limit, || {
        env_steps(&f.run) >= 800
    });
    // The learner dies mid-run and comes back from its run directory.
    l1.kill().unwrap();
    l1.wait().unwrap();
    let at_kill = env_steps(&f.run);
    std::thread::sleep(Duration::from_millis(500));
    let l2 = f.learner(true, Some(at_kill + 6000));
    wait_for("the actors to come back to the new learner", limit, || {
        env_steps(&f.run) >= at_kill + 400
    });
    // An actor dies; a new one joins.
    a2.kill().unwrap();
    a2.wait().unwrap();
    let (a3, _) = f.actor(3);
    let now = env_steps(&f.run);
    wait_for("the new actor's steps", limit, || {
        env_steps(&f.run) >= now + 400
    });
    // One actor's link goes down for four seconds.
    sh(&format!("ip link set {link1} down"));
    std::thread::sleep(Duration::from_secs(4));
    sh(&format!("ip link set {link1} up"));
    finish(l2, "the restarted learner", limit * 2);
    finish(a1, "actor a1", limit);
    finish(a3, "actor a3", limit);

    let summary = json(&f.run.join("summary.json")).expect("the learner's summary.json");
    assert_eq!(summary["incarnation"], 2, "{summary}");
    assert_eq!(summary["stop_reason"], "step budget", "{summary}");
    assert!(
        summary["actors_left"].as_u64().unwrap() >= 1,
        "the killed actor was not noticed: {summary}"
    );
    let newest = summary["weights_version"].as_u64().unwrap();
    // Every step in the replay once; each stream's episodes without holes.
    let steps = replay(&f.run);
    let online: Vec<&Step> = steps.iter().filter(|s| s.source != Source::Demo).collect();
    let ids: HashSet<(u64, u64)> = online.iter().map(|s| (s.episode, s.step)).collect();
    assert_eq!(ids.len(), online.len(), "a step was stored twice");
    let mut by_stream: BTreeMap<u64, BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for s in &online {
        let (key, episode) = reflex_fleet_split(s.episode);
        by_stream
            .entry(key)
            .or_default()
            .entry(episode)
            .or_default()
            .push(s.step);
    }
    for (key, episodes) in &by_stream {
        let first = *episodes.keys().next().unwrap();
        for (i, (e, st)) in episodes.iter().enumerate() {
            assert_eq!(
                *e,
                first + i as u64,
                "stream {key}: episode {e} follows a hole"
            );
            let mut sorted = st.clone();
            sorted.sort_unstable();
            let want: Vec<u64> = (0..sorted.len() as u64).collect();
            assert_eq!(sorted, want, "stream {key}, episode {e}: steps missing");
        }
    }
    // The ledger names each stream's key: the surviving actors' streams hold exactly what they
    // sent, all of it acknowledged.
    let ledger = json(&f.run.join("fleet").join("streams.json")).expect("the ledger");
    let key_of = |stream: u64| -> u64 {
        ledger["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"].as_u64() == Some(stream))
            .map(|s| s["key"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("stream {stream} is not in the ledger: {ledger}"))
    };
    assert_eq!(by_stream.len(), 3, "three streams sent: {ledger}");
    for n in [1, 3] {
        let r = f.report(n);
        assert_eq!(
            r["stop_reason"], "the learner finished the run",
            "a{n}: {r}"
        );
        assert_eq!(
            r["weights_version"].as_u64(),
            Some(newest),
            "a{n} is not on the newest weights: {r}"
        );
        let (stream, counters) = (&r["streams"][0][0], &r["streams"][0][1]);
        let sent = counters["transitions"].as_u64().unwrap();
        assert_eq!(
            counters["acked_transitions"].as_u64(),
            Some(sent),
            "a{n}: {r}"
        );
        let key = key_of(stream.as_u64().unwrap());
        let stored: u64 = by_stream[&key].values().map(|s| s.len() as u64).sum();
        assert_eq!(stored, sent, "a{n}: sent {sent}, the replay holds {stored}");
    }
    // The newest weights are asked for only when the learner has published newer ones than an
    // actor runs (a status naming the learner's update count instead kept every actor asking).
    let a3 = f.report(3);
    assert!(
        a3["weights_stale"].as_u64().unwrap() <= a3["weights_applied"].as_u64().unwrap() / 4,
        "a3 fetched weights it already had: {a3}"
    );
    let a1 = f.report(1);
    assert!(a1["learner_arrivals"].as_u64().unwrap() >= 2, "{a1}");
    assert!(a1["streams"][0][1]["resent"].as_u64().unwrap() > 0, "{a1}");
    if std::env::var_os("REFLEX_KEEP_TEST_DIRS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command")
        .success();
    assert!(ok, "openssl {args:?} failed");
}

/// Over TLS with user/password authentication: an actor that has the learner's CA and a
/// password in its dictionary trains to the end of the run with two runtimes (`--envs 2`, a
/// stream each); one with a wrong password is never let in and gives up at its deadline,
/// naming the endpoint.
#[test]
fn a_fleet_over_tls_lets_in_only_actors_with_a_known_password() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_fleet_over_tls_lets_in_only_actors_with_a_known_password",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("reflex-fleet-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let run = |s: String| {
        openssl(
            &args(&s).iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            &dir,
        )
    };
    run(format!(
        "req -x509 {ec} -days 1 -subj /CN=reflex-test-CA -keyout ca.key -out ca.pem \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
    ));
    run(format!(
        "req {ec} -subj /CN=localhost -keyout key.pem -out learner.csr"
    ));
    std::fs::write(
        dir.join("learner.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        "x509 -req -in learner.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
         -out cert.pem -extfile learner.ext"
            .into(),
    );
    std::fs::write(dir.join("actors.txt"), "arm-1:right-password\n").unwrap();
    let d = dir.display();
    let zenoh = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap();
    };
    zenoh(
        "learner.json5",
        format!(
            "{{ transport: {{ link: {{ tls: {{ listen_certificate: \"{d}/cert.pem\", \
             listen_private_key: \"{d}/key.pem\" }} }}, \
             auth: {{ usrpwd: {{ dictionary_file: \"{d}/actors.txt\" }} }} }} }}"
        ),
    );
    for (name, password) in [("good", "right-password"), ("bad", "wrong-password")] {
        zenoh(
            &format!("{name}.json5"),
            format!(
                "{{ transport: {{ link: {{ tls: {{ root_ca_certificate: \"{d}/ca.pem\" }} }}, \
                 auth: {{ usrpwd: {{ user: \"arm-1\", password: \"{password}\" }} }} }} }}"
            ),
        );
    }
    let common = "task = \"reach\"\ndemo_episodes = 3\neval_every = 1000000\neval_episodes = 2\nheldout_episodes = 0\n\
         target_success = 2.0\nminutes = 3.0\n\
         [bc]\nhidden = [32, 32]\nsteps = 100\n[agent]\nhidden = [32, 32]\n\
         [learner]\nbatch_size = 32\nlearning_starts = 32\ncritic_warmup_updates = 20\n";
    for who in ["learner", "good", "bad"] {
        std::fs::write(
            dir.join(format!("{who}.toml")),
            format!(
                "{common}[fleet]\nendpoint = \"tls/127.0.0.1:{PORT}\"\n\
                 zenoh_config = \"{d}/{who}.json5\"\nwait_for_learner_s = 8.0\n"
            ),
        )
        .unwrap();
    }
    // A previous run's ledger in the run directory: a fresh run starts its own.
    std::fs::create_dir_all(dir.join("run/fleet")).unwrap();
    std::fs::write(
        dir.join("run/fleet/streams.json"),
        r#"{"incarnation": 5, "streams": [{"stream": 1, "actor": "old", "key": 1, "acked": 9}]}"#,
    )
    .unwrap();
    let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
    let learner = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["learner", "--config", &format!("{d}/learner.toml")])
        .args(["--out", &format!("{d}/run"), "--max-env-steps", "1500"])
        .stdout(Stdio::null())
        .stderr(log("learner.log"))
        .spawn()
        .unwrap();
    let actor = |who: &str| {
        Command::new(env!("CARGO_BIN_EXE_reflex"))
            .args([
                "actor",
                "--config",
                &format!("{d}/{who}.toml"),
                "--task",
                "reach",
            ])
            .args(["--name", who, "--out", &format!("{d}/{who}"), "--envs", "2"])
            .stdout(Stdio::null())
            .stderr(log(&format!("{who}.log")))
            .spawn()
            .unwrap()
    };
    let good = actor("good");
    let bad = actor("bad");
    let limit = Duration::from_secs(120);
    finish(learner, "the TLS learner", limit);
    finish(good, "the actor with the right password", limit);
    let out = bad.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the actor with a wrong password was let in"
    );
    let log = std::fs::read_to_string(dir.join("bad.log")).unwrap();
    assert!(
        log.contains(&format!(
            "no learner answered for `base` at tls/127.0.0.1:{PORT}"
        )),
        "the refused actor's error does not name the endpoint: {log}"
    );
    let summary = json(&dir.join("run").join("summary.json")).expect("summary.json");
    assert_eq!(summary["stop_reason"], "step budget", "{summary}");
    // Only the good actor sent: from both its runtimes (`--envs 2`), each a stream.
    assert_eq!(summary["ingest"]["streams"], 2, "{summary}");
    let good = json(&dir.join("good").join("actor.json")).expect("the good actor's report");
    assert_eq!(
        good["stop_reason"], "the learner finished the run",
        "{good}"
    );
    let streams = good["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{good}");
    for s in streams {
        let c = &s[1];
        assert!(c["transitions"].as_u64().unwrap() > 0, "{good}");
        assert_eq!(c["acked_transitions"], c["transitions"], "{good}");
    }
    if std::env::var_os("REFLEX_KEEP_TEST_DIRS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The stream key and stream episode of a replay episode id (as `reflex_fleet` splits them).
fn reflex_fleet_split(episode: u64) -> (u64, u64) {
    (episode >> 40, episode & ((1 << 40) - 1))
}

/// What an actor or learner cannot do is refused at once, naming the option: two runtimes on
/// one real arm, ROS arguments for a simulated arm, a board's options for a ROS arm, and a
/// reward source the fleet cannot run.
#[test]
fn misused_fleet_options_are_refused_by_name() {
    let refused = |args: &[&str], want: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    let actor = ["actor", "--task", "reach", "--connect", "tcp/127.0.0.1:9"];
    let with =
        |extra: &[&'static str]| -> Vec<&str> { actor.iter().chain(extra).copied().collect() };
    refused(
        &with(&["--robot", "ros", "--envs", "2"]),
        "--envs 2: --robot ros is one arm",
    );
    refused(
        &with(&[
            "--robot",
            "serial:/dev/null",
            "--scene",
            "127.0.0.1:9",
            "--envs",
            "3",
        ]),
        "--envs 3: --robot serial:/dev/null is one arm",
    );
    refused(
        &with(&["--robot", "sim", "--ros-args", "-p", "domain_id:=3"]),
        "--params and --ros-args belong to --robot ros",
    );
    refused(
        &with(&["--robot", "ros", "--scene", "127.0.0.1:9"]),
        "--robot ros: --scene",
    );
    let run = std::env::temp_dir().join(format!("reflex-refused-learner-{}", std::process::id()));
    refused(
        &[
            "learner",
            "--task",
            "reach",
            "--reward",
            "vlm-preference",
            "--out",
            run.to_str().unwrap(),
        ],
        "reward source vlm-preference",
    );
    assert!(!run.exists(), "the refused learner wrote its run directory");
}
