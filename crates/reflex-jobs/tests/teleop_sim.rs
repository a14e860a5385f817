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
                        last = s;
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
    let session = TeleopSession::start(&TeleopSpec {
        task,
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed: 11,
        bind: "127.0.0.1:0".parse().unwrap(),
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
        let resumed = drive(&mut ws, &mut seq, [0.0; 6], false, 1.0).await;
        assert!(!resumed.estop_latched);
        // A success press ends the episode in flight with that label.
        ws.send(Message::Text(
            r#"{"type":"event","event":"success"}"#.into(),
        ))
        .await
        .unwrap();
        drive(&mut ws, &mut seq, [0.0; 6], false, 0.5).await;
        ws.close(None).await.unwrap();
    });
    assert_eq!(stats.operator_labels.load(Ordering::Relaxed), 1);
    let report = session.run_until(|_| true).unwrap();
    println!("{report:?}");
    assert!(report.intervened_steps >= 10, "{report:?}");
    assert!(report.successes >= 1, "{report:?}");
    assert_eq!(report.estops, 1);
    assert_eq!(report.refused, 0);
    assert!(report.inputs > 100, "{report:?}");
}
