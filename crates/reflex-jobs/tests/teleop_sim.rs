//! A correction session on the simulated arm, driven over the page's WebSocket protocol on
//! loopback as a person's browser would: holding the intervene control with the tool going up
//! lifts the tool while the scripted policy would lower it; releasing hands back; the e-stop
//! latches and the session waits for the re-arm; a success press ends an episode with that label.

use futures::{SinkExt, StreamExt};
use reflex_jobs::teleop::{TeleopSession, TeleopSpec};
use reflex_sim::Task;
use reflex_teleop::{ServerMessage, Status};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends the operator's input every 30 ms for `secs`, returning the last status seen.
async fn drive(ws: &mut Ws, seq: &mut u64, motion: [f64; 6], intervene: bool, secs: f64) -> Status {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut last = Status::default();
    while Instant::now() < until {
        *seq += 1;
        let msg = serde_json::json!({
            "type": "input", "seq": *seq, "motion": motion, "gripper": 1.0, "intervene": intervene,
        });
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = tokio::time::sleep(Duration::from_millis(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                m = ws.next() => {
                    if let Ok(ServerMessage::Status(s)) =
                        serde_json::from_str(m.unwrap().unwrap().to_text().unwrap())
                    {
                        last = *s;
                    }
                }
            }
        }
    }
    last
}

#[test]
fn an_operator_takes_over_from_the_page_protocol_and_labels_an_episode() {
    let task = Task::load("pick_cube").unwrap();
    let dir = std::env::temp_dir().join(format!("reflex-teleop-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let session = TeleopSession::start(&TeleopSpec {
        robot: Default::default(),
        task,
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed: 11,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: None,
        record: Some(dir.clone()),
        record_frames: false,
        success_hold_steps: 0,
    })
    .unwrap();
    assert!(session.url().starts_with("http://127.0.0.1:"));
    let url = session.ws_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = session.stats().clone();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut seq = 0;
        // The policy acts (the scripted expert heads down for the cube) while nothing is held.
        let before = drive(&mut ws, &mut seq, [0.0; 6], false, 1.0).await;
        assert!(!before.intervening, "{before:?}");
        // Held, tool up: the operator drives.
        let held = drive(&mut ws, &mut seq, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], true, 1.5).await;
        assert!(held.intervening, "{held:?}");
        assert!(
            held.tool_m[2] > before.tool_m[2] + 0.05,
            "the tool rose under the operator: {:?} -> {:?}",
            before.tool_m,
            held.tool_m
        );
        assert_eq!(
            held.executed_action[2], 1.0,
            "the executed action is the operator's"
        );
        // Released: the policy is back at once.
        let released = drive(
            &mut ws,
            &mut seq,
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            false,
            0.5,
        )
        .await;
        assert!(!released.intervening, "{released:?}");
        // The e-stop latches; nothing moves until the re-arm.
        ws.send(Message::Text(r#"{"type":"estop"}"#.into()))
            .await
            .unwrap();
        let stopped = drive(&mut ws, &mut seq, [0.0; 6], false, 0.5).await;
        assert!(stopped.estop_latched);
        let a = drive(&mut ws, &mut seq, [0.0; 6], false, 0.5).await;
        assert!(
            a.step == stopped.step,
            "no policy step while latched: {} then {}",
            stopped.step,
            a.step
        );
        ws.send(Message::Text(r#"{"type":"rearm"}"#.into()))
            .await
            .unwrap();
        let resumed = drive(&mut ws, &mut seq, [0.0; 6], false, 1.5).await;
        assert!(!resumed.estop_latched);

        // A success press ends the episode in flight with that label.
        ws.send(Message::Text(
            r#"{"type":"event","event":"success"}"#.into(),
        ))
        .await
        .unwrap();
        drive(&mut ws, &mut seq, [0.0; 6], false, 0.5).await;
        // A re-record press discards the next episode; another one begins.
        ws.send(Message::Text(
            r#"{"type":"event","event":"rerecord"}"#.into(),
        ))
        .await
        .unwrap();
        drive(&mut ws, &mut seq, [0.0; 6], false, 0.5).await;
        ws.close(None).await.unwrap();
    });
    assert_eq!(stats.operator_labels.load(Ordering::Relaxed), 1);
    // Every executed command was timed from its receipt to the filter's output: never more
    // than a policy step (100 ms at pick_cube's 10 Hz) and a few ticks.
    let latency = &stats.operator_latency;
    assert!(latency.count() >= 10, "{} timed", latency.count());
    assert!(
        latency.max_ns() < 150_000_000,
        "{} ns at most",
        latency.max_ns()
    );
    let report = session.run_until(|_| true).unwrap();
    println!("{report:?}");
    assert!(report.intervened_steps >= 10, "{report:?}");
    assert!(report.successes >= 1, "{report:?}");
    assert_eq!(report.estops, 1);
    assert_eq!(report.discarded, 1);
    assert_eq!(report.refused, 0);
    assert!(report.inputs > 100, "{report:?}");

    // The recording replays to the same trajectory: neither the episode the e-stop aborted
    // nor the discarded one is recorded; the one between them (replayed after an abort and a
    // re-arm) ended with the operator's success label. (The learning test below replays
    // takeovers.)
    let (_, recorded) = reflex_jobs::teleop::record::read_recording(&dir).unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].after_rearm && recorded[0].success,
        "{recorded:?}"
    );
    let replayed = reflex_jobs::teleop::record::replay(&dir, |_, _| {}).unwrap();
    println!("{replayed:?}");
    assert_eq!(replayed.matched, recorded.len() as u64, "{replayed:?}");
    // A recording whose actions were changed does not.
    let path = dir.join(reflex_jobs::teleop::record::RECORDING);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut first: reflex_jobs::teleop::record::EpisodeRecord =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first.actions[3][2] = -first.actions[3][2] + 0.5;
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n",
            serde_json::to_string(&first).unwrap(),
            rest.join("\n")
        ),
    )
    .unwrap();
    let tampered = reflex_jobs::teleop::record::replay(&dir, |_, _| {}).unwrap();
    assert_eq!(
        tampered.mismatched.first().map(|m| m.0),
        Some(first.episode)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--learn` with the scripted operator at the WebSocket: a session continues a small training
/// run in a copy of it, the operator's takeovers reach the replay as interventions, the learner
/// updates and publishes to the running policy, snapshots and the episode table are written;
/// a second session resumes it with the episode ids continuing, and a fresh session refuses to
/// overwrite it.
#[test]
fn a_learning_session_trains_from_the_scripted_operator_and_resumes() {
    use reflex_jobs::teleop::learn::LearnSpec;
    use reflex_jobs::teleop::operator::{run_scripted_operator, OperatorRule};
    use reflex_jobs::train::{train, TrainConfig};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let root = std::env::temp_dir().join(format!("reflex-teleop-learn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (run, dir) = (root.join("run"), root.join("session"));
    let mut cfg = TrainConfig {
        task: "reach".into(),
        seed: 3,
        max_env_steps: 1,
        demo_episodes: 3,
        eval_episodes: 1,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.runtime.servo_rate_hz = 250.0;
    cfg.bc.steps = 100;
    cfg.bc.hidden = vec![32, 32];
    cfg.agent.hidden = vec![32, 32];
    cfg.learner.batch_size = 32;
    cfg.learner.learning_starts = 16;
    cfg.learner.critic_warmup_updates = 0;
    cfg.learner.publish_every = 5;
    cfg.learner.checkpoint_every = 0;
    train(&cfg, &run, false, |_| {}).unwrap();

    let task = Task::load("reach").unwrap();
    let model = reflex_sim::Env::new(task.clone()).unwrap().model().clone();
    let spec = |resume: bool| TeleopSpec {
        robot: Default::default(),
        task: task.clone(),
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: None,
        seed: 500,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: Some(LearnSpec {
            from: (!resume).then(|| run.clone()),
            dir: dir.clone(),
            resume,
            snapshot_every_s: 2.0,
            utd: Some(4.0),
            bc_weight: Some(0.4),
        }),
        record: None,
        record_frames: false,
        success_hold_steps: 0,
    };
    // The operator drives from the first step (no patience, no share bound).
    let rule = OperatorRule {
        patience_steps: 0,
        max_share: 1.0,
        ..Default::default()
    };
    let session_with_operator = |resume: bool, episodes: usize| {
        let session = TeleopSession::start(&spec(resume)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let operator = {
            let (url, stop, task, model) =
                (session.ws_url(), stop.clone(), task.clone(), model.clone());
            std::thread::spawn(move || run_scripted_operator(&url, &task, &model, rule, &stop))
        };
        let started = Instant::now();
        let report = session
            .run_until(|s| {
                s.episodes().len() >= episodes || started.elapsed() > Duration::from_secs(40)
            })
            .unwrap();
        stop.store(true, Ordering::Release);
        let op = operator.join().unwrap().unwrap();
        (report, op)
    };

    let (first, op) = session_with_operator(false, 6);
    println!("{first:?}\n{op:?}");
    assert!(first.episode_rows.len() >= 6, "{first:?}");
    assert!(op.takeovers >= 1 && op.steps_held > 20, "{op:?}");
    assert!(first.intervened_steps > 20, "{first:?}");
    // The operator (the task's expert) reaches the targets it drives to.
    assert!(first.successes >= 1, "{first:?}");
    assert!(first.updates.unwrap() > 0, "{first:?}");
    assert!(first.published.unwrap() > 0, "{first:?}");
    assert_eq!(first.dropped_for_learner, Some(0));
    for f in ["policy.safetensors", "episodes.csv", "intervention.png"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(
        std::fs::read_dir(dir.join("snapshots")).unwrap().count() >= 1,
        "no snapshot"
    );
    // The run the session continued was not written to.
    assert!(!run.join("episodes.csv").exists());
    // Takeovers are in the session's replay as interventions (trained on as demonstrations).
    let flat = reflex_core::Observation::flat_len(0, 0, task.goals.len());
    let (_, steps, _) = reflex_learn::store::ReplayLog::open(
        &dir.join("replay"),
        flat + task.action_space.dim(),
        task.action_space.dim(),
    )
    .unwrap();
    let interventions = steps
        .iter()
        .filter(|s| s.source == reflex_learn::replay::Source::Intervention)
        .count();
    assert!(interventions > 20, "{interventions} intervention records");

    // The learning policy's answers and the operator's commands replay alike.
    let replayed = reflex_jobs::teleop::record::replay(&dir, |_, _| {}).unwrap();
    assert_eq!(
        replayed.matched as usize,
        first.episode_rows.len(),
        "{replayed:?}"
    );

    // A fresh session over the same directory is refused, naming the flag.
    let e = TeleopSession::start(&spec(false)).err().expect("refused");
    assert!(e.to_string().contains("--resume"), "{e}");

    // Resumed: episode ids continue after the first session's.
    let last = first.episode_rows.last().unwrap().row.episode;
    let (second, _) = session_with_operator(true, 1);
    assert!(second.episode_rows[0].row.episode > last, "{second:?}");
    let table = reflex_jobs::teleop::read_episodes_csv(&dir.join("episodes.csv")).unwrap();
    assert_eq!(
        table.len(),
        first.episode_rows.len() + second.episode_rows.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}
