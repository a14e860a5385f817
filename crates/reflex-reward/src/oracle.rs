//! `reflex vlm-oracle`: an OpenAI-compatible chat-completions server that answers Reflex's
//! prompts from simulator ground truth, for tests and for training in simulation without a VLM.
//!
//! The ground truth travels with each request in the `X-Reflex-Oracle` header (JSON), which the
//! client adds in simulation and real servers ignore: `{"keypoints": {"affordance": [x, y],
//! "waypoints": [[x, y], ...]}}`, `{"progress": [p1, p2]}` or `{"success": true}`. The oracle
//! recognises the prompt, and answers the way a VLM does: an analysis in prose, then the
//! answer, sometimes in a code fence. Faults are injected on purpose: `noise` is the chance an
//! answer is wrong, in one of the ways of [`NoiseMode`] (drawn evenly from `noise_modes`),
//! `latency` delays every answer, `error_rate` answers 500 or 429 instead, `garbage_rate`
//! answers text with no answer in it.
//!
//! The keypoint hint may carry what realistic mistakes are made of: `object_box`, the pixel box
//! of the object under the true grasp point, and `distractors`, a pixel on each other thing in
//! view (from the simulator's segmentation, which only the hint sees).

use crate::prompts::Kind;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use reflex_core::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a wrong answer is wrong: the mistakes real VLMs make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseMode {
    /// A confident point anywhere in the image; a flipped label.
    Random,
    /// The right object, the wrong part of it: the grasp point on the far side of its box.
    WrongPart,
    /// Another thing in view (a robot link, another object) taken for the object.
    Distractor,
    /// The waypoints mirrored through the grasp point: the plan goes the wrong way.
    WrongWay,
    /// Left and right swapped: the whole answer mirrored about the image's vertical centre.
    LeftRight,
    /// Near and far confused: the point placed behind the object (above it in the image),
    /// where the depth belongs to what lies beyond.
    Depth,
    /// No commitment: two different proposals with a hedge, or "I cannot tell"; a preference
    /// or success answer that will not say.
    Hedge,
}

impl NoiseMode {
    /// Every mode, as flags spell them.
    pub const ALL: [(&'static str, NoiseMode); 7] = [
        ("random", NoiseMode::Random),
        ("wrong-part", NoiseMode::WrongPart),
        ("distractor", NoiseMode::Distractor),
        ("wrong-way", NoiseMode::WrongWay),
        ("left-right", NoiseMode::LeftRight),
        ("depth", NoiseMode::Depth),
        ("hedge", NoiseMode::Hedge),
    ];

    /// The mode's name as flags spell it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("random", |(n, _)| n)
    }
}

impl std::str::FromStr for NoiseMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s.trim())
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!(
                    "unknown noise mode `{s}` (one of: {})",
                    Self::ALL.map(|(n, _)| n).join(", ")
                )
            })
    }
}

/// Oracle settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OracleConfig {
    /// Chance that an answer is wrong, 0..1.
    pub noise: f64,
    /// How a wrong answer is wrong, drawn evenly from these (empty: random).
    pub noise_modes: Vec<NoiseMode>,
    /// Delay before every answer.
    pub latency: Duration,
    /// Chance of answering HTTP 500 or 429 (half each) instead, 0..1.
    pub error_rate: f64,
    /// Chance of answering prose with no answer in it, 0..1.
    pub garbage_rate: f64,
    /// Seed of the fault and noise draws.
    pub seed: u64,
}

impl Default for OracleConfig {
    fn default() -> Self {
        Self {
            noise: 0.0,
            noise_modes: vec![NoiseMode::Random],
            latency: Duration::ZERO,
            error_rate: 0.0,
            garbage_rate: 0.0,
            seed: 0,
        }
    }
}

/// Requests the oracle has seen, by outcome.
#[derive(Debug, Default)]
pub struct OracleStats {
    /// Chat-completion requests received.
    pub requests: AtomicU64,
    /// Answered with a (possibly noisy) answer.
    pub answered: AtomicU64,
    /// Of those, answered wrong on purpose.
    pub wrong: AtomicU64,
    /// Answered with an injected 500 or 429.
    pub errors: AtomicU64,
    /// Answered with injected garbage.
    pub garbage: AtomicU64,
    /// Refused: no hint, unknown prompt or malformed request.
    pub refused: AtomicU64,
}

struct OracleState {
    cfg: OracleConfig,
    rng: Mutex<Rng>,
    stats: Arc<OracleStats>,
}

/// A running oracle server.
pub struct Oracle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<OracleStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Oracle {
    /// Serves on `addr` (port 0: any free port) from a thread of its own.
    pub fn start(addr: SocketAddr, cfg: OracleConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(OracleStats::default());
        let app = router(cfg, stats.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("reflex-vlm-oracle".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!("oracle server: {e}");
                    }
                });
            })?;
        Ok(Self {
            addr,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The base URL clients use (`http://addr/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The oracle's routes (also for serving in the foreground from the CLI).
pub fn router(cfg: OracleConfig, stats: Arc<OracleStats>) -> Router {
    let state = Arc::new(OracleState {
        rng: Mutex::new(Rng::new(cfg.seed)),
        cfg,
        stats,
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(state)
        .layer(axum::middleware::map_response(identify))
}

/// Every answer says it comes from Reflex's oracle: only then does a client send it ground truth.
async fn identify(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        crate::vlm::ORACLE_SERVER_HEADER,
        axum::http::HeaderValue::from_static("ground-truth"),
    );
    resp
}

async fn models() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        serde_json::json!({
            "object": "list",
            "data": [{ "id": "reflex-oracle", "object": "model", "owned_by": "reflex" }]
        })
        .to_string(),
    )
}

fn refuse(state: &OracleState, status: StatusCode, message: &str) -> Response {
    state.stats.refused.fetch_add(1, Ordering::Relaxed);
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({ "error": { "message": message, "type": "invalid_request_error" } })
            .to_string(),
    )
        .into_response()
}

async fn chat(State(state): State<Arc<OracleState>>, headers: HeaderMap, body: String) -> Response {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let req: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return refuse(&state, StatusCode::BAD_REQUEST, &format!("body: {e}")),
    };
    let model = req["model"].as_str().unwrap_or("reflex-oracle").to_owned();
    let prompt: String = req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| match &m["content"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str().map(str::to_owned))
                .collect(),
            _ => vec![],
        })
        .collect::<Vec<_>>()
        .join("\n");
    let Some(kind) = Kind::of(&prompt) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "not a Reflex prompt");
    };
    let hint: serde_json::Value = match headers
        .get("x-reflex-oracle")
        .and_then(|h| h.to_str().ok())
        .map(serde_json::from_str)
    {
        Some(Ok(v)) => v,
        _ => {
            return refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "the oracle needs the ground truth in the X-Reflex-Oracle header",
            )
        }
    };
    // Draw every random choice up front, then release the lock before waiting.
    let (fault, wrong, style, r1, r2) = {
        let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
        let u = rng.uniform(0.0, 1.0);
        let fault = if u < state.cfg.error_rate {
            Some(if rng.uniform(0.0, 1.0) < 0.5 {
                500
            } else {
                429
            })
        } else if u < state.cfg.error_rate + state.cfg.garbage_rate {
            Some(0)
        } else {
            None
        };
        let wrong = rng.uniform(0.0, 1.0) < state.cfg.noise;
        let modes = &state.cfg.noise_modes;
        let mode = match modes.len() {
            0 => NoiseMode::Random,
            n => modes[(rng.next_u64() % n as u64) as usize],
        };
        (
            fault,
            wrong.then_some(mode),
            (rng.next_u64() % 3) as u8,
            rng.uniform(0.0, 1.0),
            rng.uniform(0.0, 1.0),
        )
    };
    if !state.cfg.latency.is_zero() {
        tokio::time::sleep(state.cfg.latency).await;
    }
    match fault {
        Some(500) => {
            state.stats.errors.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::INTERNAL_SERVER_ERROR, "injected server error").into_response();
        }
        Some(429) => {
            state.stats.errors.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                "injected rate limit",
            )
                .into_response();
        }
        Some(_) => {
            state.stats.garbage.fetch_add(1, Ordering::Relaxed);
            return completion(&model, "I am looking at the image. It shows a robot.");
        }
        None => {}
    }
    let text = match answer_text(kind, &hint, wrong, style, (r1, r2)) {
        Ok(t) => t,
        Err(m) => return refuse(&state, StatusCode::BAD_REQUEST, &m),
    };
    state.stats.answered.fetch_add(1, Ordering::Relaxed);
    if wrong.is_some() {
        state.stats.wrong.fetch_add(1, Ordering::Relaxed);
    }
    completion(&model, &text)
}

fn completion(model: &str, text: &str) -> Response {
    (
        [("content-type", "application/json")],
        serde_json::json!({
            "id": "chatcmpl-reflex-oracle",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "stop"
            }],
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }
        })
        .to_string(),
    )
        .into_response()
}

/// The answer text for a prompt of `kind` given the ground truth `hint`. `wrong` makes it
/// wrong on purpose, in that way (`r` places a wrong point or picks a distractor); `style`
/// varies the wrapping as VLMs do.
pub fn answer_text(
    kind: Kind,
    hint: &serde_json::Value,
    wrong: Option<NoiseMode>,
    style: u8,
    r: (f64, f64),
) -> Result<String, String> {
    let wrap = |analysis: &str, answer: String| match style {
        0 => format!("{analysis}\n{answer}"),
        1 => format!("{analysis}\n\n```json\n{answer}\n```"),
        _ => format!("Answer:\n{answer}\n\nReasoning: {analysis}"),
    };
    match kind {
        Kind::Keypoints => {
            let k = &hint["keypoints"];
            let Some(truth) = pixel(&k["affordance"]) else {
                return Err("hint: keypoints.affordance [x, y] is missing".into());
            };
            let ways: Vec<[f64; 2]> = k["waypoints"]
                .as_array()
                .map(|a| a.iter().filter_map(pixel).collect())
                .unwrap_or_default();
            let size = &hint["image"];
            let (w, h) = (
                size[0].as_f64().unwrap_or(160.0),
                size[1].as_f64().unwrap_or(120.0),
            );
            let object_box = hint["object_box"].as_array().and_then(|b| {
                let v: Vec<f64> = b.iter().filter_map(serde_json::Value::as_f64).collect();
                (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
            });
            let distractors: Vec<[f64; 2]> = hint["distractors"]
                .as_array()
                .map(|a| a.iter().filter_map(pixel).collect())
                .unwrap_or_default();
            let analysis = "The object to grasp is marked; the gripper should close on it and \
                            carry it along the waypoints.";
            let answer = |aff: [f64; 2], ways: &[[f64; 2]]| {
                let c = |p: [f64; 2]| {
                    serde_json::json!([p[0].clamp(0.0, w - 1e-3), p[1].clamp(0.0, h - 1e-3)])
                };
                serde_json::json!({
                    "affordance": c(aff),
                    "waypoints": ways.iter().map(|p| c(*p)).collect::<Vec<_>>(),
                })
                .to_string()
            };
            let random = [r.0 * w, r.1 * h];
            // The far side of the object's box from the true point, inset a little so it
            // stays on the object.
            let wrong_part = |b: [f64; 4]| {
                let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                let fx = if truth[0] <= cx { b[2] } else { b[0] };
                let fy = if truth[1] <= cy { b[3] } else { b[1] };
                [fx + 0.2 * (cx - fx), fy + 0.2 * (cy - fy)]
            };
            let shifted = |to: [f64; 2]| -> Vec<[f64; 2]> {
                ways.iter()
                    .map(|p| [p[0] + to[0] - truth[0], p[1] + to[1] - truth[1]])
                    .collect()
            };
            let text = match wrong {
                None => wrap(analysis, answer(truth, &ways)),
                Some(NoiseMode::Random) => wrap(analysis, answer(random, &ways)),
                Some(NoiseMode::WrongPart) => {
                    let p = object_box.map_or(random, wrong_part);
                    wrap(analysis, answer(p, &shifted(p)))
                }
                Some(NoiseMode::Distractor) => {
                    let p = match distractors.len() {
                        0 => random,
                        n => distractors[((r.0 * n as f64) as usize).min(n - 1)],
                    };
                    wrap(analysis, answer(p, &shifted(p)))
                }
                Some(NoiseMode::WrongWay) => {
                    let mirrored: Vec<[f64; 2]> = ways
                        .iter()
                        .map(|p| [2.0 * truth[0] - p[0], 2.0 * truth[1] - p[1]])
                        .collect();
                    wrap(analysis, answer(truth, &mirrored))
                }
                Some(NoiseMode::LeftRight) => {
                    let flip = |p: &[f64; 2]| [w - p[0], p[1]];
                    let ways: Vec<[f64; 2]> = ways.iter().map(flip).collect();
                    wrap(analysis, answer(flip(&truth), &ways))
                }
                Some(NoiseMode::Depth) => {
                    let p = object_box
                        .map_or(random, |b| [truth[0], b[1] - 0.5 * (b[3] - b[1]).max(2.0)]);
                    wrap(analysis, answer(p, &shifted(p)))
                }
                Some(NoiseMode::Hedge) => {
                    if r.1 < 0.5 {
                        "I cannot tell which part to grasp from this view: the object is \
                         partly hidden."
                            .to_owned()
                    } else {
                        let other = object_box.map_or(random, wrong_part);
                        format!(
                            "I am not sure. The grasp point is either {} or {}; it is hard to \
                             tell from this angle.",
                            answer(truth, &ways),
                            answer(other, &shifted(other))
                        )
                    }
                }
            };
            Ok(text)
        }
        Kind::Preference => {
            let p = &hint["progress"];
            let (Some(a), Some(b)) = (p[0].as_f64(), p[1].as_f64()) else {
                return Err("hint: progress [p1, p2] is missing".into());
            };
            let mut label = if a == b {
                -1
            } else if a > b {
                0
            } else {
                1
            };
            let analysis = "Image 1 and Image 2 show the arm at different stages of the task.";
            match wrong {
                Some(NoiseMode::Hedge) => {
                    return Ok(
                        "The two images look much alike; I cannot tell which one is \
                               further along."
                            .to_owned(),
                    )
                }
                // Every other mistake confuses which image is which.
                Some(_) if label >= 0 => label = 1 - label,
                _ => {}
            }
            Ok(match style {
                1 => wrap(analysis, format!("{{\"label\": {label}}}")),
                _ => format!("{analysis}\n{label}"),
            })
        }
        Kind::Success => {
            let Some(mut s) = hint["success"].as_bool() else {
                return Err("hint: success (true/false) is missing".into());
            };
            match wrong {
                Some(NoiseMode::Hedge) => {
                    return Ok(
                        "It may have worked, but the view is not clear enough to say.".to_owned(),
                    )
                }
                Some(_) => s = !s,
                None => {}
            }
            Ok(wrap(
                "Judging from the object's position relative to the gripper and the table.",
                format!("{{\"success\": {s}}}"),
            ))
        }
    }
}

/// An `[x, y]` pixel of a hint.
fn pixel(v: &serde_json::Value) -> Option<[f64; 2]> {
    let a = v.as_array()?;
    match (a.first()?.as_f64(), a.get(1)?.as_f64()) {
        (Some(x), Some(y)) if a.len() == 2 => Some([x, y]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_keypoints, parse_preference, parse_success, Grid, ParseError};

    const GRID: Grid = Grid {
        width: 160,
        height: 120,
        cols: 8,
        rows: 6,
    };

    fn hint() -> serde_json::Value {
        serde_json::json!({
            "keypoints": { "affordance": [60.0, 70.0], "waypoints": [[60.0, 40.0]] },
            "image": [160, 120],
            "object_box": [50, 60, 74, 84],
            "distractors": [[130.0, 20.0]],
        })
    }

    fn keypoints(
        mode: Option<NoiseMode>,
        r: (f64, f64),
    ) -> Result<([f64; 2], [f64; 2]), ParseError> {
        let text = answer_text(Kind::Keypoints, &hint(), mode, 1, r).unwrap();
        parse_keypoints(&text, &GRID).map(|k| (k.affordance, k.waypoints[0]))
    }

    /// Each mode makes its own mistake, and the parser reads it as an answer (or, hedged, as
    /// no answer).
    #[test]
    fn every_noise_mode_is_the_mistake_it_names() {
        assert_eq!(
            keypoints(None, (0.1, 0.9)).unwrap(),
            ([60.0, 70.0], [60.0, 40.0])
        );
        // The far corner of the object's box, inset: still on the object, away from the truth.
        let (a, w) = keypoints(Some(NoiseMode::WrongPart), (0.1, 0.9)).unwrap();
        assert!(
            (50.0..74.0).contains(&a[0]) && (60.0..84.0).contains(&a[1]),
            "{a:?}"
        );
        assert!((a[0] - 60.0).hypot(a[1] - 70.0) > 10.0, "{a:?}");
        assert_eq!(
            [w[0] - a[0], w[1] - a[1]],
            [0.0, -30.0],
            "the plan moves with it"
        );
        let (a, _) = keypoints(Some(NoiseMode::Distractor), (0.1, 0.9)).unwrap();
        assert_eq!(a, [130.0, 20.0]);
        let (a, w) = keypoints(Some(NoiseMode::WrongWay), (0.1, 0.9)).unwrap();
        assert_eq!((a, w), ([60.0, 70.0], [60.0, 100.0]), "down instead of up");
        let (a, w) = keypoints(Some(NoiseMode::LeftRight), (0.1, 0.9)).unwrap();
        assert_eq!((a, w), ([100.0, 70.0], [100.0, 40.0]));
        let (a, _) = keypoints(Some(NoiseMode::Depth), (0.1, 0.9)).unwrap();
        assert!(a[0] == 60.0 && a[1] < 60.0, "behind the object: {a:?}");
        let (a, _) = keypoints(Some(NoiseMode::Random), (0.25, 0.5)).unwrap();
        assert_eq!(a, [40.0, 60.0]);
        for r in [(0.1, 0.2), (0.1, 0.9)] {
            let got = keypoints(Some(NoiseMode::Hedge), r);
            assert!(
                matches!(got, Err(ParseError::Unsure) | Err(ParseError::NoJson(_))),
                "{got:?}"
            );
        }
        // Preferences flip or hedge; success flips or hedges.
        let pref = serde_json::json!({ "progress": [0.2, 0.8] });
        let p =
            |m| parse_preference(&answer_text(Kind::Preference, &pref, m, 1, (0.0, 0.0)).unwrap());
        assert_eq!(p(None), Ok(crate::parse::Preference::Second));
        assert_eq!(
            p(Some(NoiseMode::LeftRight)),
            Ok(crate::parse::Preference::First)
        );
        assert_eq!(p(Some(NoiseMode::Hedge)), Err(ParseError::Unsure));
        let ok = serde_json::json!({ "success": true });
        let s = |m| parse_success(&answer_text(Kind::Success, &ok, m, 0, (0.0, 0.0)).unwrap());
        assert_eq!(s(None), Ok(true));
        assert_eq!(s(Some(NoiseMode::Depth)), Ok(false));
        assert!(s(Some(NoiseMode::Hedge)).is_err());
        // Without the segmentation's hints, the modes that need them fall back to random.
        let bare = serde_json::json!({
            "keypoints": { "affordance": [60.0, 70.0], "waypoints": [] }, "image": [160, 120]
        });
        let t = answer_text(
            Kind::Keypoints,
            &bare,
            Some(NoiseMode::Distractor),
            0,
            (0.5, 0.5),
        );
        assert_eq!(
            parse_keypoints(&t.unwrap(), &GRID).unwrap().affordance,
            [80.0, 60.0]
        );
        assert_eq!("wrong-way".parse::<NoiseMode>(), Ok(NoiseMode::WrongWay));
        assert!("sideways"
            .parse::<NoiseMode>()
            .unwrap_err()
            .contains("hedge"));
    }
}
