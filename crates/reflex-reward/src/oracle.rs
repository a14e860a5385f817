//! `reflex vlm-oracle`: an OpenAI-compatible chat-completions server that answers Reflex's
//! prompts from simulator ground truth, for tests and for training in simulation without a VLM.
//!
//! The ground truth travels with each request in the `X-Reflex-Oracle` header (JSON), which the
//! client adds in simulation and real servers ignore: `{"keypoints": {"affordance": [x, y],
//! "waypoints": [[x, y], ...]}}`, `{"progress": [p1, p2]}` or `{"success": true}`. The oracle
//! recognises the prompt, and answers the way a VLM does: an analysis in prose, then the
//! answer, sometimes in a code fence. Faults are injected on purpose: `noise` is the chance an
//! answer is wrong (a random point, a flipped label), `latency` delays every answer,
//! `error_rate` answers 500 or 429 instead, `garbage_rate` answers text with no answer in it.

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

/// Oracle settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OracleConfig {
    /// Chance that an answer is wrong, 0..1.
    pub noise: f64,
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
        (
            fault,
            rng.uniform(0.0, 1.0) < state.cfg.noise,
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
/// wrong on purpose (`r` places a wrong point); `style` varies the wrapping as VLMs do.
pub fn answer_text(
    kind: Kind,
    hint: &serde_json::Value,
    wrong: bool,
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
            if k["affordance"].as_array().is_none_or(|a| a.len() != 2) {
                return Err("hint: keypoints.affordance [x, y] is missing".into());
            }
            let mut k = k.clone();
            if wrong {
                // A confident answer somewhere else in the image.
                let size = &hint["image"];
                let (w, h) = (
                    size[0].as_f64().unwrap_or(160.0),
                    size[1].as_f64().unwrap_or(120.0),
                );
                k["affordance"] = serde_json::json!([r.0 * w, r.1 * h]);
            }
            Ok(wrap(
                "The object to grasp is marked; the gripper should close on it and carry it \
                 along the waypoints.",
                k.to_string(),
            ))
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
            if wrong && label >= 0 {
                label = 1 - label;
            }
            let analysis = "Image 1 and Image 2 show the arm at different stages of the task.";
            Ok(match style {
                1 => wrap(analysis, format!("{{\"label\": {label}}}")),
                _ => format!("{analysis}\n{label}"),
            })
        }
        Kind::Success => {
            let Some(mut s) = hint["success"].as_bool() else {
                return Err("hint: success (true/false) is missing".into());
            };
            if wrong {
                s = !s;
            }
            Ok(wrap(
                "Judging from the object's position relative to the gripper and the table.",
                format!("{{\"success\": {s}}}"),
            ))
        }
    }
}
