//! The VLM client against the oracle server over real HTTP on loopback: answers, the cache, the
//! budget, and every fault the client must survive (server down, slow answers, 500 and 429,
//! garbage), with replies always joined to their own request.

use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::parse::{Grid, Preference};
use reflex_reward::vlm::{Answer, Png, Query, Reply, Request, VlmClient, VlmConfig, VlmError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRID: Grid = Grid {
    width: 16,
    height: 12,
    cols: 4,
    rows: 3,
};

fn png() -> Arc<Png> {
    let rgb: Vec<u8> = (0..16 * 12 * 3).map(|i| (i * 7 % 251) as u8).collect();
    Arc::new(Png::encode_rgb(16, 12, &rgb).unwrap())
}

fn oracle(cfg: OracleConfig) -> Oracle {
    Oracle::start("127.0.0.1:0".parse().unwrap(), cfg).unwrap()
}

fn client(base_url: String, tweak: impl FnOnce(&mut VlmConfig)) -> VlmClient {
    let mut cfg = VlmConfig {
        base_url,
        timeout_s: 5.0,
        backoff_ms: 10,
        max_backoff_ms: 50,
        ..Default::default()
    };
    tweak(&mut cfg);
    VlmClient::start(cfg).unwrap()
}

fn preference(id: u64, p1: f64, p2: f64) -> Request {
    Request {
        id,
        query: Query::Preference {
            first: png(),
            second: png(),
            instruction: "pick up the red cube".into(),
        },
        hint: Some(serde_json::json!({ "progress": [p1, p2] })),
    }
}

fn keypoints(id: u64) -> Request {
    Request {
        id,
        query: Query::Keypoints {
            image: png(),
            grid: GRID,
            instruction: "pick up the red cube".into(),
        },
        hint: Some(serde_json::json!({
            "keypoints": { "affordance": [5.0, 6.0], "waypoints": [[5.0, 2.0]] },
            "image": [16, 12]
        })),
    }
}

/// Collects `n` replies, failing the test after `limit`.
fn collect(c: &VlmClient, n: usize, limit: Duration) -> Vec<Reply> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(t0.elapsed() < limit, "only {} of {n} replies", out.len());
        if let Some(r) = c.recv_timeout(Duration::from_millis(50)) {
            out.push(r);
        }
    }
    out
}

#[test]
fn every_kind_of_question_is_answered_over_http() {
    let o = oracle(OracleConfig::default());
    let c = client(o.base_url(), |_| {});
    c.submit(keypoints(1)).unwrap();
    c.submit(preference(2, 0.2, 0.7)).unwrap();
    c.submit(Request {
        id: 3,
        query: Query::Success {
            image: png(),
            instruction: "pick up the red cube".into(),
        },
        hint: Some(serde_json::json!({ "success": true })),
    })
    .unwrap();
    let mut replies = collect(&c, 3, Duration::from_secs(20));
    replies.sort_by_key(|r| r.id);
    match &replies[0].result {
        Ok(Answer::Keypoints(k)) => {
            assert_eq!(k.affordance, [5.0, 6.0]);
            assert_eq!(k.waypoints, vec![[5.0, 2.0]]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        replies[1].result,
        Ok(Answer::Preference(Preference::Second))
    );
    assert_eq!(replies[2].result, Ok(Answer::Success(true)));
    let s = c.stats();
    assert_eq!((s.answered, s.queries, s.failed), (3, 3, 0), "{s:?}");
    assert_eq!(o.stats.answered.load(Ordering::Relaxed), 3);
}

#[test]
fn the_cache_answers_repeats_without_a_query() {
    let dir = std::env::temp_dir().join(format!("reflex-vlm-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = oracle(OracleConfig::default());
    let c = client(o.base_url(), |cfg| cfg.cache_dir = Some(dir.clone()));
    c.submit(keypoints(1)).unwrap();
    let first = collect(&c, 1, Duration::from_secs(20));
    assert!(!first[0].cached && first[0].result.is_ok());
    c.submit(keypoints(2)).unwrap();
    let second = collect(&c, 1, Duration::from_secs(20));
    assert!(second[0].cached, "{:?}", second[0]);
    assert_eq!(second[0].result, first[0].result);
    assert_eq!(o.stats.requests.load(Ordering::Relaxed), 1);
    assert_eq!(c.stats().cache_hits, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_budget_stops_queries() {
    let o = oracle(OracleConfig::default());
    let c = client(o.base_url(), |cfg| {
        cfg.budget = 2;
        cfg.concurrency = 1;
    });
    for id in 0..4 {
        c.submit(preference(id, 0.1, 0.9)).unwrap();
    }
    let replies = collect(&c, 4, Duration::from_secs(20));
    let over = replies
        .iter()
        .filter(|r| matches!(r.result, Err(VlmError::OverBudget(2))))
        .count();
    assert_eq!(over, 2, "{replies:?}");
    assert_eq!(o.stats.requests.load(Ordering::Relaxed), 2);
    assert_eq!(c.stats().over_budget, 2);
}

#[test]
fn a_server_that_is_down_fails_in_bounded_time() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client(format!("http://127.0.0.1:{port}/v1"), |cfg| {
        cfg.max_retries = 2
    });
    let t0 = Instant::now();
    c.submit(preference(7, 0.1, 0.9)).unwrap();
    let r = collect(&c, 1, Duration::from_secs(20));
    assert_eq!(r[0].id, 7);
    assert!(matches!(r[0].result, Err(VlmError::Connect(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let s = c.stats();
    assert_eq!((s.connect_errors, s.retries, s.failed), (3, 2, 1), "{s:?}");
}

#[test]
fn slow_answers_time_out_and_are_counted() {
    let o = oracle(OracleConfig {
        latency: Duration::from_secs(3),
        ..Default::default()
    });
    let c = client(o.base_url(), |cfg| {
        cfg.timeout_s = 0.3;
        cfg.max_retries = 1;
    });
    let t0 = Instant::now();
    c.submit(preference(1, 0.1, 0.9)).unwrap();
    let r = collect(&c, 1, Duration::from_secs(20));
    assert_eq!(r[0].result, Err(VlmError::Timeout { attempts: 2 }));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(c.stats().timeouts, 2);
}

#[test]
fn server_errors_and_rate_limits_are_retried_then_reported() {
    let o = oracle(OracleConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    let c = client(o.base_url(), |cfg| cfg.max_retries = 3);
    c.submit(preference(1, 0.1, 0.9)).unwrap();
    let r = collect(&c, 1, Duration::from_secs(20));
    match &r[0].result {
        Err(VlmError::Status { status, .. }) => assert!([429, 500].contains(status)),
        other => panic!("{other:?}"),
    }
    let s = c.stats();
    assert_eq!((s.http_errors, s.retries, s.queries), (4, 3, 4), "{s:?}");
    assert_eq!(o.stats.errors.load(Ordering::Relaxed), 4);
}

#[test]
fn garbage_is_dropped_as_invalid() {
    let o = oracle(OracleConfig {
        garbage_rate: 1.0,
        ..Default::default()
    });
    let c = client(o.base_url(), |_| {});
    c.submit(keypoints(1)).unwrap();
    c.submit(preference(2, 0.3, 0.1)).unwrap();
    let r = collect(&c, 2, Duration::from_secs(20));
    assert!(
        r.iter()
            .all(|r| matches!(r.result, Err(VlmError::Parse(_)))),
        "{r:?}"
    );
    assert_eq!(c.stats().invalid, 2);
}

/// Under a mix of faults and several requests in flight, replies come back in any order, but
/// every answer that arrives is the answer to its own request: nothing is mislabelled.
#[test]
fn under_faults_no_answer_is_joined_to_another_request() {
    let o = oracle(OracleConfig {
        error_rate: 0.3,
        garbage_rate: 0.2,
        latency: Duration::from_millis(20),
        seed: 5,
        ..Default::default()
    });
    let c = client(o.base_url(), |cfg| {
        cfg.max_retries = 1;
        cfg.concurrency = 4;
    });
    let n = 40;
    for id in 0..n {
        // Even ids: Image 1 is further along; odd ids: Image 2.
        let (a, b) = if id % 2 == 0 { (0.8, 0.2) } else { (0.2, 0.8) };
        c.submit(preference(id, a, b)).unwrap();
    }
    let replies = collect(&c, n as usize, Duration::from_secs(60));
    let mut ids: Vec<u64> = replies.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>());
    let mut answered = 0;
    for r in &replies {
        if let Ok(Answer::Preference(p)) = &r.result {
            answered += 1;
            let want = if r.id % 2 == 0 {
                Preference::First
            } else {
                Preference::Second
            };
            assert_eq!(*p, want, "request {} got another request's answer", r.id);
        }
    }
    let s = c.stats();
    assert!(answered > 10 && s.failed > 0, "{answered} answered, {s:?}");
    assert_eq!(s.answered + s.failed, n, "{s:?}");
}

/// A full request queue refuses at once instead of blocking the caller.
#[test]
fn a_full_queue_refuses_without_blocking() {
    let o = oracle(OracleConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    });
    let c = client(o.base_url(), |cfg| {
        cfg.queue = 2;
        cfg.concurrency = 1;
    });
    let t0 = Instant::now();
    let refused = (0..50)
        .filter(|id| c.submit(preference(*id, 0.1, 0.9)).is_err())
        .count();
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert!(refused > 0);
    assert_eq!(c.stats().queue_full, refused as u64);
}

/// Shutting down with a full queue in front of a slow server abandons the work at once
/// instead of waiting for every answer (here 20 queued answers of 2 s, one at a time).
#[test]
fn shutdown_abandons_queued_work_at_once() {
    let o = oracle(OracleConfig {
        latency: Duration::from_secs(2),
        ..Default::default()
    });
    let c = client(o.base_url(), |cfg| {
        cfg.queue = 20;
        cfg.concurrency = 1;
    });
    for id in 0..20 {
        c.submit(preference(id, 0.1, 0.9)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    c.shutdown();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    o.stop();
}

/// Ground truth goes only to Reflex's oracle. A server that is not the oracle (here a plain
/// HTTP server on loopback that records what it receives and answers like a chat endpoint)
/// never sees the `X-Reflex-Oracle` header; the oracle does. The old client sent it to every
/// server.
#[test]
fn the_ground_truth_header_goes_only_to_the_oracle() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let server = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            // Two requests: the client's model-list probe and the chat request.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as many body bytes as it announces.
                loop {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let body = if text.starts_with("GET") {
                    r#"{"object":"list","data":[{"id":"some-model","object":"model"}]}"#
                } else {
                    r#"{"choices":[{"message":{"role":"assistant","content":"{\"label\": 1}"}}]}"#
                };
                seen.lock().unwrap().push(text);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).unwrap();
            }
        })
    };
    let c = client(format!("http://127.0.0.1:{port}/v1"), |_| {});
    c.submit(preference(1, 0.2, 0.8)).unwrap();
    let replies = collect(&c, 1, Duration::from_secs(10));
    assert_eq!(replies[0].id, 1);
    assert_eq!(
        replies[0].result,
        Ok(Answer::Preference(Preference::Second))
    );
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for req in seen.iter() {
        assert!(
            !req.to_ascii_lowercase().contains("x-reflex-oracle"),
            "ground truth sent to a server that is not the oracle:\n{req}"
        );
    }
    assert!(seen[1].starts_with("POST"), "{}", seen[1]);
    assert_eq!(c.stats().hints_withheld, 1);

    // The oracle identifies itself and gets the hint (it cannot answer without it).
    let server = oracle(OracleConfig::default());
    let c = client(server.base_url(), |_| {});
    c.submit(preference(2, 0.2, 0.8)).unwrap();
    let replies = collect(&c, 1, Duration::from_secs(10));
    assert_eq!(
        replies[0].result,
        Ok(Answer::Preference(Preference::Second))
    );
    assert_eq!(c.stats().hints_withheld, 0);
    server.stop();
}
