//! The teleop server over real HTTP and WebSocket on loopback: requests without the token are
//! refused, the page is served with it, and the protocol drives the runtime's operator cell and
//! e-stop; a malformed message is answered with an error naming it, and the connection stays.

use futures::{SinkExt, StreamExt};
use reflex_core::{latest, ActionSpace, OperatorCommand, Takeover};
use reflex_runtime::EStop;
use reflex_teleop::{random_token, OperatorHub, ServerMessage, SessionInfo, Status, TeleopServer};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A plain HTTP GET on loopback; returns the status code and the body.
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

#[test]
fn the_page_and_socket_need_the_token_and_the_protocol_drives_the_runtime() {
    let (tx, mut rx) = latest::<OperatorCommand>();
    let estop = EStop::new();
    let hub = Arc::new(OperatorHub::new(tx, ActionSpace::EeDelta, estop.clone()));
    let status = Arc::new(|| Status {
        episode: 3,
        ..Default::default()
    });
    let token = random_token().unwrap();
    let server = TeleopServer::start(
        "127.0.0.1:0".parse().unwrap(),
        token.clone(),
        hub.clone(),
        status,
        None,
        SessionInfo {
            task: "pick_cube".into(),
            instruction: "pick up the red cube".into(),
        },
    )
    .unwrap();
    let addr = server.addr;

    // Without the token, or with a wrong one: refused, page and socket alike.
    assert_eq!(get(addr, "/").0, 401);
    assert_eq!(get(addr, "/?token=0123").0, 401);
    assert_eq!(get(addr, &format!("/ws?token={}", &token[..31])).0, 401);
    let (code, body) = get(addr, &format!("/?token={token}"));
    assert_eq!(code, 200);
    assert!(body.contains("E-STOP") && body.contains("Hold"), "the page");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=wrong")).await;
        assert!(refused.is_err(), "a socket without the token is refused");

        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        let next = |text: &str| serde_json::from_str::<ServerMessage>(text).unwrap();
        // Hello first, then status messages about 20 times a second.
        let first = ws.next().await.unwrap().unwrap();
        match next(first.to_text().unwrap()) {
            ServerMessage::Hello {
                task, cartesian, ..
            } => {
                assert_eq!(task, "pick_cube");
                assert!(cartesian);
            }
            other => panic!("{other:?}"),
        }
        let started = Instant::now();
        let mut statuses = 0;
        while started.elapsed() < Duration::from_millis(500) {
            if let ServerMessage::Status(s) =
                next(ws.next().await.unwrap().unwrap().to_text().unwrap())
            {
                assert_eq!(s.episode, 3);
                statuses += 1;
            }
        }
        assert!((5..=15).contains(&statuses), "{statuses} statuses in 0.5 s");

        // Holding the intervene control with the tool going up.
        let input =
            r#"{"type":"input","seq":1,"motion":[0,0,0.5,0,0,0],"gripper":-1,"intervene":true}"#;
        ws.send(Message::Text(input.into())).await.unwrap();
        ws.send(Message::Text(
            r#"{"type":"event","event":"success"}"#.into(),
        ))
        .await
        .unwrap();
        // A malformed message: an error naming it; the connection stays.
        ws.send(Message::Text(
            r#"{"type":"input","seq":2,"motion":[0,0,9,0,0,0],"gripper":0,"intervene":true}"#
                .into(),
        ))
        .await
        .unwrap();
        let mut error = None;
        for _ in 0..50 {
            if let ServerMessage::Error { message } =
                next(ws.next().await.unwrap().unwrap().to_text().unwrap())
            {
                error = Some(message);
                break;
            }
        }
        let error = error.expect("an error answer");
        assert!(error.contains("motion[2]"), "{error}");
        // The e-stop latches; the re-arm answers.
        ws.send(Message::Text(r#"{"type":"estop"}"#.into()))
            .await
            .unwrap();
        ws.send(Message::Text(r#"{"type":"rearm"}"#.into()))
            .await
            .unwrap();
        let mut rearmed = None;
        for _ in 0..50 {
            if let ServerMessage::Rearm { ok, .. } =
                next(ws.next().await.unwrap().unwrap().to_text().unwrap())
            {
                rearmed = Some(ok);
                break;
            }
        }
        assert_eq!(rearmed, Some(true));
        ws.close(None).await.unwrap();
    });

    let c = rx
        .take()
        .expect("the runtime's operator cell has a command");
    assert_eq!(c.takeover, Takeover::Held);
    assert_eq!(c.action.as_slice(), &[0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0]);
    assert_eq!(c.events.success, 1);
    assert_eq!(estop.presses(), 1);
    assert_eq!(estop.rearms(), 1);
    assert!(!estop.is_latched());
    let s = &hub.stats;
    assert_eq!(s.inputs.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    server.stop();
}

/// The blocking client (what the scripted operator speaks): refused without the token with the
/// HTTP status named and the token kept out of the message; with it, it reads the hello and
/// statuses, and its inputs reach the runtime's operator cell numbered in order.
#[test]
fn the_blocking_client_speaks_the_protocol() {
    use reflex_teleop::{ClientError, OperatorClient};
    let (tx, mut rx) = latest::<OperatorCommand>();
    let hub = Arc::new(OperatorHub::new(tx, ActionSpace::EeDelta, EStop::new()));
    let status = Arc::new(|| Status {
        episode: 4,
        observation: vec![0.5; 3],
        ..Default::default()
    });
    let token = random_token().unwrap();
    let server = TeleopServer::start(
        "127.0.0.1:0".parse().unwrap(),
        token.clone(),
        hub.clone(),
        status,
        None,
        SessionInfo {
            task: "reach".into(),
            instruction: "reach".into(),
        },
    )
    .unwrap();
    let wrong = format!("ws://{}/ws?token=0000", server.addr);
    match OperatorClient::connect(&wrong, Duration::from_secs(2)) {
        Err(e @ ClientError::Connect { .. }) => {
            let m = e.to_string();
            assert!(m.contains("401") && !m.contains("0000"), "{m}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a client without the token was let in"),
    }
    assert!(OperatorClient::connect("http://127.0.0.1:1/ws", Duration::from_secs(1)).is_err());

    let mut c = OperatorClient::connect(&server.ws_url(), Duration::from_secs(2)).unwrap();
    let s = c
        .next_status(Duration::from_secs(2))
        .unwrap()
        .expect("a status within 2 s");
    assert_eq!((s.episode, s.observation.len()), (4, 3));
    assert!(matches!(c.hello(), Some(ServerMessage::Hello { .. })));
    assert_eq!(
        c.input([0.0, 0.0, 0.4, 0.0, 0.0, 0.0], -1.0, true).unwrap(),
        1
    );
    // Out-of-range values are clamped by the client, never sent as they are.
    assert_eq!(
        c.input([9.0, 0.0, 0.0, 0.0, 0.0, f64::NAN], 2.0, true)
            .unwrap(),
        2
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = None;
    while Instant::now() < deadline
        && got.is_none_or(|c: OperatorCommand| c.action.as_slice()[0] < 1.0)
    {
        if let Some(cmd) = rx.take() {
            got = Some(cmd);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cmd = got.expect("the inputs reached the operator cell");
    assert_eq!(cmd.takeover, Takeover::Held);
    assert_eq!(cmd.action.as_slice(), &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(c.take_errors(), Vec::<String>::new());
    assert_eq!(
        hub.stats
            .last_seq
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    c.close();
}
