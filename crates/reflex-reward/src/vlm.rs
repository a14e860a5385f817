//! The client of an OpenAI-compatible vision-language model (`POST {base_url}/chat/completions`
//! with base64 PNG images): vLLM, a llama.cpp server, Ollama, a hosted API, or our oracle.
//!
//! It runs on its own thread with a tokio runtime. Callers (a reward worker, never the control
//! loop) hand it requests through a bounded queue with [`VlmClient::submit`], which never
//! blocks: a full queue refuses the request and counts it. Each reply carries the id of its
//! request, so an answer that arrives late is joined to its own step and never to another.
//! Around every request: a concurrency limit, a per-attempt timeout, retries with exponential
//! backoff on 429, 5xx and connection errors (honouring `Retry-After`, capped), an on-disk cache
//! keyed by the SHA-256 of model, prompt and images (hits cost no query), and a query budget.
//! Answers that cannot be parsed, or that say "unsure", are dropped and counted.

use crate::parse::{parse_keypoints, parse_preference, parse_success, Grid, ParseError};
use crate::parse::{KeypointAnswer, Preference};
use crate::prompts;
use base64::Engine;
use image::ImageEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Client settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlmConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`. `https://` needs
    /// a build with the `tls` feature.
    pub base_url: String,
    /// Extra root certificate(s), PEM, trusted for `https://` besides the system's (a private
    /// CA, a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// Model name sent with each request.
    pub model: String,
    /// Environment variable holding the API key (unset or empty: no key).
    pub api_key_env: String,
    /// File holding the API key (first line), used when the variable is unset.
    pub api_key_file: Option<PathBuf>,
    /// Timeout of one attempt, seconds.
    pub timeout_s: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff, milliseconds (doubles per retry, with jitter).
    pub backoff_ms: u64,
    /// Longest backoff, milliseconds (also caps `Retry-After`).
    pub max_backoff_ms: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests waiting at most (more are refused and counted).
    pub queue: usize,
    /// Directory of the answer cache (none: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Network queries allowed in all (0: no limit); cache hits are free.
    pub budget: u64,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
}

impl Default for VlmConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            ca_file: None,
            model: "reflex-oracle".into(),
            api_key_env: "REFLEX_VLM_API_KEY".into(),
            api_key_file: None,
            timeout_s: 30.0,
            max_retries: 3,
            backoff_ms: 250,
            max_backoff_ms: 8000,
            concurrency: 4,
            queue: 64,
            cache_dir: None,
            budget: 0,
            max_tokens: 512,
        }
    }
}

/// An image to send: PNG bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Png(pub Vec<u8>);

impl Png {
    /// Encodes an RGB buffer (`width x height x 3`).
    pub fn encode_rgb(width: usize, height: usize, rgb: &[u8]) -> Result<Self, VlmError> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                rgb,
                width as u32,
                height as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| VlmError::Image(e.to_string()))?;
        Ok(Self(out))
    }
}

/// What to ask.
#[derive(Clone, Debug)]
pub enum Query {
    /// Keypoints on one grid-annotated image.
    Keypoints {
        /// The image (already annotated with `grid`).
        image: Arc<Png>,
        /// The grid drawn on it.
        grid: Grid,
        /// The task instruction.
        instruction: String,
    },
    /// Which of two frames shows more progress.
    Preference {
        /// Image 1.
        first: Arc<Png>,
        /// Image 2.
        second: Arc<Png>,
        /// The task instruction.
        instruction: String,
    },
    /// Whether one frame shows success.
    Success {
        /// The image.
        image: Arc<Png>,
        /// The task instruction.
        instruction: String,
    },
}

/// A request: an id the reply will carry (a step id, an episode id, a pair id), the question,
/// and (in simulation, for the oracle server) the ground truth behind it. The ground truth goes
/// out as the `X-Reflex-Oracle` header only to a server that identified itself as Reflex's
/// oracle ([`ORACLE_SERVER_HEADER`] on its answers); every other server never sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Id echoed in the reply.
    pub id: u64,
    /// The question.
    pub query: Query,
    /// Ground truth for the oracle server.
    pub hint: Option<serde_json::Value>,
}

/// The response header by which Reflex's oracle server identifies itself. Until a server has
/// sent it, the client withholds ground-truth hints from that server.
pub const ORACLE_SERVER_HEADER: &str = "x-reflex-oracle-server";

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Keypoints, in pixels.
    Keypoints(KeypointAnswer),
    /// The preferred frame.
    Preference(Preference),
    /// Success or not.
    Success(bool),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VlmError {
    /// Bad settings.
    #[error("VLM configuration: {0}")]
    Config(String),
    /// Image encoding failed.
    #[error("image: {0}")]
    Image(String),
    /// Every attempt timed out.
    #[error("timed out after {attempts} attempt(s)")]
    Timeout {
        /// Attempts made.
        attempts: u32,
    },
    /// The server answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The server could not be reached.
    #[error("connection: {0}")]
    Connect(String),
    /// The response was not a chat completion.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The answer could not be used.
    #[error("answer: {0}")]
    Parse(#[from] ParseError),
    /// The query budget is spent.
    #[error("query budget of {0} spent")]
    OverBudget(u64),
    /// The client is shutting down.
    #[error("the client stopped")]
    Stopped,
}

/// A reply to [`Request`] `id`.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// The answer, or why there is none.
    pub result: Result<Answer, VlmError>,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Counters, all monotonic.
#[derive(Debug, Default)]
pub struct VlmStats {
    /// Requests accepted by [`VlmClient::submit`].
    pub submitted: AtomicU64,
    /// Requests refused because the queue was full.
    pub queue_full: AtomicU64,
    /// HTTP attempts made (retries included).
    pub queries: AtomicU64,
    /// Answers served from the cache.
    pub cache_hits: AtomicU64,
    /// Usable answers.
    pub answered: AtomicU64,
    /// Answers dropped as invalid.
    pub invalid: AtomicU64,
    /// Answers dropped as unsure.
    pub unsure: AtomicU64,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Attempts answered with an HTTP error status.
    pub http_errors: AtomicU64,
    /// Attempts that could not connect.
    pub connect_errors: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Requests refused by the budget.
    pub over_budget: AtomicU64,
    /// Requests that ended without an answer (any reason).
    pub failed: AtomicU64,
    /// Replies dropped because the reply queue was full.
    pub replies_dropped: AtomicU64,
    /// Requests whose ground-truth hint was withheld (the server is not Reflex's oracle).
    pub hints_withheld: AtomicU64,
}

/// A copy of [`VlmStats`] for reports (`summary.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct VlmCounters {
    pub submitted: u64,
    pub queue_full: u64,
    pub queries: u64,
    pub cache_hits: u64,
    pub answered: u64,
    pub invalid: u64,
    pub unsure: u64,
    pub timeouts: u64,
    pub http_errors: u64,
    pub connect_errors: u64,
    pub retries: u64,
    pub over_budget: u64,
    pub failed: u64,
    pub replies_dropped: u64,
    #[serde(default)]
    pub hints_withheld: u64,
}

impl VlmStats {
    /// A snapshot.
    pub fn counters(&self) -> VlmCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VlmCounters {
            submitted: g(&self.submitted),
            queue_full: g(&self.queue_full),
            queries: g(&self.queries),
            cache_hits: g(&self.cache_hits),
            answered: g(&self.answered),
            invalid: g(&self.invalid),
            unsure: g(&self.unsure),
            timeouts: g(&self.timeouts),
            http_errors: g(&self.http_errors),
            connect_errors: g(&self.connect_errors),
            retries: g(&self.retries),
            over_budget: g(&self.over_budget),
            failed: g(&self.failed),
            replies_dropped: g(&self.replies_dropped),
            hints_withheld: g(&self.hints_withheld),
        }
    }
}

/// The client: a thread with a tokio runtime, a bounded request queue in and a bounded reply
/// queue out.
pub struct VlmClient {
    tx: Option<tokio::sync::mpsc::Sender<Request>>,
    halt: Option<tokio::sync::oneshot::Sender<()>>,
    replies: crossbeam::channel::Receiver<Reply>,
    stats: Arc<VlmStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    cfg: VlmConfig,
    http: reqwest::Client,
    key: Option<String>,
    stats: Arc<VlmStats>,
    replies: crossbeam::channel::Sender<Reply>,
    /// The server identified itself as Reflex's oracle: hints may go to it.
    oracle: std::sync::atomic::AtomicBool,
}

/// The HTTP client: plain HTTP always; HTTPS with the `tls` feature.
#[cfg(not(feature = "tls"))]
fn http_client(cfg: &VlmConfig) -> Result<reqwest::Client, VlmError> {
    if cfg.base_url.starts_with("https://") || cfg.ca_file.is_some() {
        return Err(VlmError::Config(format!(
            "base_url `{}`: this build has no TLS; build reflex with `--features tls` for https",
            cfg.base_url
        )));
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(cfg.timeout_s))
        .build()
        .map_err(|e| VlmError::Config(e.to_string()))
}

/// The HTTP client: plain HTTP always; HTTPS with the `tls` feature.
#[cfg(feature = "tls")]
fn http_client(cfg: &VlmConfig) -> Result<reqwest::Client, VlmError> {
    // One process-wide provider; a second install (another client) is refused and harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs_f64(cfg.timeout_s));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| VlmError::Config(format!("ca_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| VlmError::Config(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(VlmError::Config(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| VlmError::Config(e.to_string()))
}

impl VlmClient {
    /// Checks the settings, reads the key and starts the client thread.
    pub fn start(cfg: VlmConfig) -> Result<Self, VlmError> {
        if !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")) {
            return Err(VlmError::Config(format!(
                "base_url `{}` must start with http:// or https://",
                cfg.base_url
            )));
        }
        if !(cfg.timeout_s > 0.0 && cfg.timeout_s.is_finite()) {
            return Err(VlmError::Config("timeout_s must be positive".into()));
        }
        if cfg.concurrency == 0 || cfg.queue == 0 {
            return Err(VlmError::Config(
                "concurrency and queue must be at least 1".into(),
            ));
        }
        let key = read_key(&cfg)?;
        let http = http_client(&cfg)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Request>(cfg.queue);
        let (reply_tx, replies) = crossbeam::channel::bounded(cfg.queue.max(16) * 4);
        let stats = Arc::new(VlmStats::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
        let shared = Arc::new(Shared {
            cfg,
            http,
            key,
            stats: stats.clone(),
            replies: reply_tx,
            oracle: std::sync::atomic::AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VlmError::Config(format!("tokio runtime: {e}")))?;
        let (halt_tx, halt_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("reflex-vlm".into())
            .spawn(move || {
                let work = async move {
                    // Is this Reflex's oracle? Only then may ground truth be sent to it.
                    shared.probe().await;
                    let mut tasks = tokio::task::JoinSet::new();
                    // A request leaves the queue only when a slot is free, so the queue's bound
                    // is the bound on waiting requests.
                    while let Ok(permit) = permits.clone().acquire_owned().await {
                        let Some(req) = rx.recv().await else {
                            break;
                        };
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            let _permit = permit;
                            let id = req.id;
                            let (result, cached) = shared.answer(req).await;
                            shared.finish(id, result, cached);
                        });
                        // Reap finished tasks so the set stays small.
                        while tasks.try_join_next().is_some() {}
                    }
                    while tasks.join_next().await.is_some() {}
                };
                // Stopping abandons queued and in-flight requests at once (dropping the task
                // set aborts them): no reply comes for them, and shutdown never waits on a
                // slow server.
                runtime.block_on(async move {
                    tokio::select! {
                        _ = halt_rx => {}
                        _ = work => {}
                    }
                });
            })
            .map_err(|e| VlmError::Config(format!("thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            halt: Some(halt_tx),
            replies,
            stats,
            thread: Some(thread),
        })
    }

    /// Requests the queue can take now (0: [`VlmClient::submit`] would refuse).
    pub fn queue_free(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.capacity())
    }

    /// Queues a request without waiting; a full queue gives it back (counted).
    pub fn submit(&self, req: Request) -> Result<(), Box<Request>> {
        let Some(tx) = &self.tx else {
            return Err(Box::new(req));
        };
        match tx.try_send(req) {
            Ok(()) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                Err(Box::new(e.into_inner()))
            }
        }
    }

    /// The next reply, if one is ready.
    pub fn try_recv(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// The next reply, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Reply> {
        self.replies.recv_timeout(timeout).ok()
    }

    /// The counters.
    pub fn stats(&self) -> VlmCounters {
        self.stats.counters()
    }

    /// Stops at once: queued and in-flight requests are abandoned (no replies come for them);
    /// joins the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.halt.take() {
            let _ = h.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VlmClient {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_key(cfg: &VlmConfig) -> Result<Option<String>, VlmError> {
    if let Ok(k) = std::env::var(&cfg.api_key_env) {
        if !k.trim().is_empty() {
            return Ok(Some(k.trim().to_owned()));
        }
    }
    match &cfg.api_key_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| VlmError::Config(format!("api_key_file {}: {e}", p.display())))?;
            let k = text.lines().next().unwrap_or("").trim().to_owned();
            if k.is_empty() {
                return Err(VlmError::Config(format!(
                    "api_key_file {}: empty",
                    p.display()
                )));
            }
            Ok(Some(k))
        }
        None => Ok(None),
    }
}

/// The prompt and images of a query.
fn render(q: &Query) -> (String, Vec<&Png>) {
    match q {
        Query::Keypoints {
            image,
            grid,
            instruction,
        } => (prompts::keypoints(instruction, grid), vec![image.as_ref()]),
        Query::Preference {
            first,
            second,
            instruction,
        } => (
            prompts::preference(instruction),
            vec![first.as_ref(), second.as_ref()],
        ),
        Query::Success { image, instruction } => {
            (prompts::success(instruction), vec![image.as_ref()])
        }
    }
}

/// The chat-completions request body.
pub fn request_body(model: &str, max_tokens: u32, prompt: &str, images: &[&Png]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut content = vec![serde_json::json!({ "type": "text", "text": prompt })];
    for img in images {
        content.push(serde_json::json!({
            "type": "image_url",
            "image_url": { "url": format!("data:image/png;base64,{}", b64.encode(&img.0)) }
        }));
    }
    serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": content }],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    })
    .to_string()
}

/// The assistant's text in a chat-completions response.
pub fn response_text(body: &str) -> Result<String, VlmError> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| VlmError::Malformed(format!("not JSON ({e})")))?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| VlmError::Malformed("no choices[0].message.content".into()))
}

/// Parses the answer text of `q`; unsure and invalid answers are errors.
pub fn interpret(q: &Query, text: &str) -> Result<Answer, ParseError> {
    Ok(match q {
        Query::Keypoints { grid, .. } => Answer::Keypoints(parse_keypoints(text, grid)?),
        Query::Preference { .. } => Answer::Preference(parse_preference(text)?),
        Query::Success { .. } => Answer::Success(parse_success(text)?),
    })
}

fn cache_key(model: &str, prompt: &str, images: &[&Png]) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(prompt.as_bytes());
    for img in images {
        h.update([0]);
        h.update((img.0.len() as u64).to_le_bytes());
        h.update(&img.0);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(&key[..2]).join(format!("{key}.txt"))
}

fn cache_store(dir: &Path, key: &str, text: &str) {
    let path = cache_path(dir, key);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!("VLM cache: cannot write {}: {e}", path.display());
    }
}

impl Shared {
    /// Asks the server's model list once, bounded by the attempt timeout, and notes whether it
    /// identifies itself as Reflex's oracle.
    async fn probe(&self) {
        let url = format!("{}/models", self.cfg.base_url.trim_end_matches('/'));
        let mut rb = self.http.get(&url);
        if let Some(k) = &self.key {
            rb = rb.header("authorization", format!("Bearer {k}"));
        }
        if let Ok(resp) = rb.send().await {
            self.note_server(resp.headers());
        }
    }

    /// Remembers an oracle server by its header.
    fn note_server(&self, headers: &reqwest::header::HeaderMap) -> bool {
        let is_oracle = headers.contains_key(ORACLE_SERVER_HEADER);
        if is_oracle {
            self.oracle.store(true, Ordering::Relaxed);
        }
        is_oracle
    }

    /// The answer to one request: from the cache, or over HTTP with retries.
    async fn answer(&self, req: Request) -> (Result<Answer, VlmError>, bool) {
        let (prompt, images) = render(&req.query);
        let key = cache_key(&self.cfg.model, &prompt, &images);
        if let Some(dir) = &self.cfg.cache_dir {
            if let Ok(text) = std::fs::read_to_string(cache_path(dir, &key)) {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return (interpret(&req.query, &text).map_err(VlmError::from), true);
            }
        }
        let body = request_body(&self.cfg.model, self.cfg.max_tokens, &prompt, &images);
        let text = match self.post_with_retries(body, req.hint.as_ref()).await {
            Ok(t) => t,
            Err(e) => return (Err(e), false),
        };
        let parsed = interpret(&req.query, &text);
        // Only answers that parsed go to the cache: a garbled one is asked again next time.
        if parsed.is_ok() {
            if let Some(dir) = &self.cfg.cache_dir {
                cache_store(dir, &key, &text);
            }
        }
        (parsed.map_err(VlmError::from), false)
    }

    async fn post_with_retries(
        &self,
        body: String,
        hint: Option<&serde_json::Value>,
    ) -> Result<String, VlmError> {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut backoff = Duration::from_millis(self.cfg.backoff_ms);
        let max_backoff = Duration::from_millis(self.cfg.max_backoff_ms);
        let mut last = VlmError::Stopped;
        let mut timeouts = 0;
        for attempt in 0..=self.cfg.max_retries {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            if self.cfg.budget > 0 {
                let used = self.stats.queries.fetch_add(1, Ordering::Relaxed);
                if used >= self.cfg.budget {
                    self.stats.queries.fetch_sub(1, Ordering::Relaxed);
                    self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                    return Err(VlmError::OverBudget(self.cfg.budget));
                }
            } else {
                self.stats.queries.fetch_add(1, Ordering::Relaxed);
            }
            let mut rb = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(k) = &self.key {
                rb = rb.header("authorization", format!("Bearer {k}"));
            }
            let oracle = self.oracle.load(Ordering::Relaxed);
            let withheld = hint.is_some() && !oracle;
            if let (Some(h), true) = (hint, oracle) {
                rb = rb.header("x-reflex-oracle", h.to_string());
            }
            if withheld {
                self.stats.hints_withheld.fetch_add(1, Ordering::Relaxed);
            }
            let mut retry_after = None;
            match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if self.note_server(resp.headers()) && withheld && !status.is_success() {
                        // The oracle came up after the probe: ask again, with the hint.
                        continue;
                    }
                    retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64);
                    let text = match resp.text().await {
                        Ok(t) => t,
                        Err(e) if e.is_timeout() => {
                            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                            timeouts += 1;
                            last = VlmError::Timeout { attempts: timeouts };
                            continue;
                        }
                        Err(e) => {
                            last = VlmError::Connect(e.to_string());
                            continue;
                        }
                    };
                    if status.is_success() {
                        return response_text(&text);
                    }
                    self.stats.http_errors.fetch_add(1, Ordering::Relaxed);
                    last = VlmError::Status {
                        status: status.as_u16(),
                        body: text.chars().take(200).collect(),
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(last);
                    }
                }
                Err(e) if e.is_timeout() => {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    timeouts += 1;
                    last = VlmError::Timeout { attempts: timeouts };
                }
                Err(e) => {
                    self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                    last = VlmError::Connect(e.to_string());
                }
            }
            if attempt < self.cfg.max_retries {
                // Full jitter on the exponential step; Retry-After when larger, both capped.
                let jitter = 0.5 + 0.5 * pseudo_unit(attempt, &url);
                let wait = retry_after
                    .unwrap_or_default()
                    .max(backoff.mul_f64(jitter))
                    .min(max_backoff);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
        Err(last)
    }

    fn finish(&self, id: u64, result: Result<Answer, VlmError>, cached: bool) {
        match &result {
            Ok(_) => {
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(VlmError::Parse(ParseError::Unsure)) => {
                self.stats.unsure.fetch_add(1, Ordering::Relaxed);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(VlmError::Parse(_) | VlmError::Malformed(_)) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.replies.try_send(Reply { id, result, cached }).is_err() {
            self.stats.replies_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A number in [0, 1) that differs per attempt and URL (jitter without a shared RNG).
fn pseudo_unit(attempt: u32, url: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(attempt.to_le_bytes());
    h.update(url.as_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
            .to_le_bytes(),
    );
    let d = h.finalize();
    f64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]])) / 4_294_967_296.0
}
