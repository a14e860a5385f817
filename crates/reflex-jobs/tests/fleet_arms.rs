//! Actors on real-time arms (`reflex actor --robot serial:PORT` and `--robot ros`) feeding one
//! fleet learner over Zenoh: one actor drives the firmware's control core on a pseudo-terminal
//! (`reflex firmware-sim`'s board, with its scene link on loopback UDP), the other the
//! simulated arm served over DDS through the ROS 2 bridge. Both are paced in real time, are
//! judged by the task over the tracked objects (never the simulator's state) and start every
//! episode through the arm's own reset. Runs in a loopback-only network namespace.

#![cfg(feature = "fleet")]

mod common;

use common::ros::{params, ros_args, serve_sim_arm};
use reflex_jobs::arms::SimArms;
use reflex_jobs::fleet::{fleet_actor, fleet_learner, link_settings, ActorReport, ActorSpec};
use reflex_jobs::ros::RosArms;
use reflex_jobs::serial::SerialArms;
use reflex_learn::replay::{Source, Step};
use reflex_learn::store::ReplayLog;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;

const ENDPOINT: &str = "tcp/127.0.0.1:7448";

fn replay(run: &Path) -> Vec<Step> {
    let dir = run.join("replay");
    let header = std::fs::read(dir.join("000000.seg")).expect("a replay segment");
    let obs = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
    let act = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    ReplayLog::open(&dir, obs, act).expect("the replay opens").1
}

#[test]
fn a_serial_arm_and_a_ros_arm_act_for_one_fleet_learner() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "a_serial_arm_and_a_ros_arm_act_for_one_fleet_learner",
    ) {
        return;
    }
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = std::env::temp_dir().join(format!("reflex-fleet-arms-{}", std::process::id()));
    let (task_path, task) = common::short_pick_cube(&dir);
    let mut cfg = common::short_train_config(&task_path, 250.0);
    // Several 20-step episodes from each arm.
    cfg.max_env_steps = 120;
    cfg.fleet.wait_for_learner_s = 60.0;
    cfg.fleet.flush_ms = 20;
    let settings = link_settings(&cfg, Some(ENDPOINT));

    // The board on a pty, and the simulated arm over DDS.
    let (board, target) = common::sim_board(&task);
    let domain = 83;
    let (stop_arm, server, arm_stats) = serve_sim_arm(&task, &params(domain), 9, 0.0, (32, 32));

    let out = dir.join("run");
    let actor = |name: &str| ActorSpec {
        name: name.into(),
        envs: 1,
        seed: 5,
        minutes: Some(2.0),
        out: dir.join(name),
    };
    let (summary, reports) = std::thread::scope(|s| {
        let learner = s.spawn(|| {
            fleet_learner(
                &SimArms::new(task.clone(), cfg.runtime.servo_rate_hz),
                &cfg,
                &settings,
                &out,
                false,
                |_| {},
            )
        });
        let serial = s.spawn(|| -> ActorReport {
            let arms = SerialArms::open(&task, &target, cfg.runtime.servo_rate_hz).unwrap();
            fleet_actor(&arms, &cfg, &settings, &actor("board")).unwrap()
        });
        let ros = s.spawn(|| -> ActorReport {
            let arms = RosArms::new(&task, &ros_args(domain), cfg.runtime.servo_rate_hz).unwrap();
            fleet_actor(&arms, &cfg, &settings, &actor("ros")).unwrap()
        });
        let summary = learner.join().unwrap().unwrap();
        (summary, [serial.join().unwrap(), ros.join().unwrap()])
    });
    // Longer than the board's watchdog: an actor that left without a word would trip it.
    common::wait_past_the_board_watchdog();
    let resets = board.scene.resets.load(Ordering::Relaxed);
    let board_report = board.stop();
    stop_arm.store(true, Ordering::Release);
    server.join().unwrap();
    eprintln!("{summary:?}\n{reports:?}\nboard: {board_report:?}");

    assert_eq!(summary.stop_reason, "step budget", "{summary:?}");
    assert_eq!(summary.ingest.streams, 2, "{summary:?}");
    assert_eq!(summary.ingest.duplicate_transitions, 0, "{summary:?}");
    // Each arm ran episodes, started by its own reset, and stopped when the learner finished;
    // everything it sent was acknowledged.
    for r in &reports {
        assert_eq!(r.stop_reason, "the learner finished the run", "{r:?}");
        assert!(r.episodes >= 2, "{r:?}");
        let (_, c) = &r.streams[0];
        assert!(c.transitions > 0, "{r:?}");
        assert_eq!(c.acked_transitions, c.transitions, "{r:?}");
        assert_eq!(c.dropped_transitions, 0, "{r:?}");
    }
    assert!(
        resets >= reports[0].episodes,
        "{resets} scene resets for {} episodes",
        reports[0].episodes
    );
    assert!(
        arm_stats.resets.load(Ordering::Relaxed) >= reports[1].episodes,
        "a reset per episode"
    );
    // The replay holds what the arms sent, once each, with rewards judged over the tracked
    // cube (pick_cube's reach term is positive at any distance: a pending reward would be 0).
    let steps = replay(&out);
    let online: Vec<&Step> = steps.iter().filter(|s| s.source != Source::Demo).collect();
    let ids: HashSet<(u64, u64)> = online.iter().map(|s| (s.episode, s.step)).collect();
    assert_eq!(ids.len(), online.len(), "a step was stored twice");
    let mut by_stream: BTreeMap<u64, u64> = BTreeMap::new();
    for s in &online {
        *by_stream.entry(s.episode >> 40).or_default() += 1;
        assert!(s.reward > 0.0, "a step without the task's reward: {s:?}");
    }
    let sent: u64 = reports.iter().map(|r| r.streams[0].1.transitions).sum();
    assert_eq!(by_stream.len(), 2, "{by_stream:?}");
    assert_eq!(online.len() as u64, sent, "{by_stream:?}");
    // The board was never refused a setpoint and is left holding the arm, not tripped.
    assert_eq!(board_report.stats.watchdog_trips, 0, "{board_report:?}");
    assert!(board_report.faults.is_empty(), "{board_report:?}");
    assert_eq!(board_report.rejects.total(), 0, "{board_report:?}");
    assert_eq!(board_report.mode, reflex_fw_core::wire::BoardMode::Holding);
    std::fs::remove_dir_all(&dir).ok();
}

/// A reward source the fleet cannot run yet is refused by name, on both sides, before any link
/// opens: never trained on the task's reward unasked.
#[test]
fn a_fleet_refuses_a_reward_source_it_cannot_run() {
    let task = reflex_sim::Task::load("reach").unwrap();
    let dir = std::env::temp_dir().join(format!("reflex-fleet-reward-{}", std::process::id()));
    for source in [
        reflex_jobs::rewards::RewardSource::VlmKeypoints,
        reflex_jobs::rewards::RewardSource::Classifier,
    ] {
        let mut cfg = reflex_jobs::train::TrainConfig {
            task: "reach".into(),
            ..Default::default()
        };
        cfg.reward.source = Some(source);
        let settings = link_settings(&cfg, Some(ENDPOINT));
        let arms = SimArms::new(task.clone(), cfg.runtime.servo_rate_hz);
        let spec = ActorSpec {
            name: "a".into(),
            envs: 1,
            seed: 0,
            minutes: None,
            out: dir.join("actor"),
        };
        let name = format!("{source:?}");
        for err in [
            fleet_actor(&arms, &cfg, &settings, &spec).unwrap_err(),
            fleet_learner(&arms, &cfg, &settings, &dir.join("run"), false, |_| {}).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("reward source") && err.contains("task's reward only"),
                "{name}: {err}"
            );
        }
    }
    assert!(
        !dir.join("run").exists(),
        "the learner wrote before refusing"
    );
    std::fs::remove_dir_all(&dir).ok();
}
