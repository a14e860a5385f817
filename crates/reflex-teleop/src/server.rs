//! The session's web server: the operator's page (`/`) and its WebSocket (`/ws`), both refused
//! without the session's access token (`?token=...`). It serves from a thread of its own; the
//! control loop never waits on it.

use crate::hub::OperatorHub;
use crate::protocol::{parse, ServerMessage, Status};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often a connected client is sent the session's status.
const STATUS_PERIOD: Duration = Duration::from_millis(50);

/// The session's current status (called by the server, from its own thread).
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// The cameras' newest views: each camera's name, a number that changes with every new view,
/// and the view (called by the server, from its own thread).
pub type FramesFn = Arc<dyn Fn() -> Vec<(String, u64, reflex_core::Frame)> + Send + Sync>;

/// `frame` as PNG, base64 (None if it does not hold a whole RGB image).
pub fn png_base64(frame: &reflex_core::Frame) -> Option<String> {
    use base64::Engine;
    if frame.width == 0 || frame.height == 0 || frame.rgb.len() != frame.width * frame.height * 3 {
        return None;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().ok()?;
        w.write_image_data(&frame.rgb).ok()?;
    }
    Some(base64::engine::general_purpose::STANDARD.encode(out))
}

/// A random access token: 128 bits from the operating system, as hex.
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What the page and the WebSocket share.
struct Shared {
    token: String,
    hub: Arc<OperatorHub>,
    status: StatusFn,
    frames: Option<FramesFn>,
    hello: ServerMessage,
    page: &'static str,
}

/// The task a session runs, as the page shows it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The task's name.
    pub task: String,
    /// Its instruction.
    pub instruction: String,
}

/// A running teleop server.
pub struct TeleopServer {
    /// Where it listens.
    pub addr: SocketAddr,
    token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TeleopServer {
    /// Serves the page and the WebSocket on `bind` (port 0: any free port) with access token
    /// `token`: messages go to `hub`, the status comes from `status`, camera views (if any)
    /// from `frames`.
    pub fn start(
        bind: SocketAddr,
        token: String,
        hub: Arc<OperatorHub>,
        status: StatusFn,
        frames: Option<FramesFn>,
        info: SessionInfo,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(bind))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.clone(),
            hello: ServerMessage::Hello {
                task: info.task,
                instruction: info.instruction,
                cartesian: hub.cartesian(),
            },
            hub,
            status,
            frames,
            page: crate::PAGE,
        });
        let app = Router::new()
            .route("/", get(page))
            .route("/ws", get(socket))
            .with_state(shared);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("reflex-teleop-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!("teleop server: {e}");
                    }
                });
            })?;
        Ok(Self {
            addr,
            token,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The page's address with its token: what the operator opens.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }

    /// The WebSocket's address with its token.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws?token={}", self.addr, self.token)
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

impl Drop for TeleopServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn authorised(shared: &Shared, query: &HashMap<String, String>) -> bool {
    query.get("token").is_some_and(|t| same(t, &shared.token))
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong access token: open the URL `reflex teleop` printed\n",
    )
        .into_response()
}

async fn page(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&shared, &query) {
        return refused();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        shared.page,
    )
        .into_response()
}

async fn socket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // The token first: a request without it learns nothing, not even that this is a socket.
    if !authorised(&shared, &query) {
        return refused();
    }
    match upgrade {
        Ok(u) => u.on_upgrade(move |ws| session(ws, shared)),
        Err(e) => e.into_response(),
    }
}

async fn send(ws: &mut WebSocket, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => ws.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn session(mut ws: WebSocket, shared: Arc<Shared>) {
    if !send(&mut ws, &shared.hello).await {
        return;
    }
    let mut ticker = tokio::time::interval(STATUS_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent_views: Vec<(String, u64)> = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let status = (shared.status)();
                if !send(&mut ws, &ServerMessage::Status(Box::new(status))).await {
                    return;
                }
                // Each camera's view once, when it is new.
                for (camera, seq, frame) in shared.frames.as_ref().map(|f| f()).unwrap_or_default() {
                    if sent_views.iter().any(|(c, s)| *c == camera && *s == seq) {
                        continue;
                    }
                    sent_views.retain(|(c, _)| *c != camera);
                    sent_views.push((camera.clone(), seq));
                    if let Some(png) = png_base64(&frame) {
                        if !send(&mut ws, &ServerMessage::Frame { camera, png }).await {
                            return;
                        }
                    }
                }
            }
            incoming = ws.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let answer = match parse(&text) {
                    Ok(msg) => shared.hub.apply(&msg),
                    Err(message) => {
                        shared.hub.refuse();
                        Some(ServerMessage::Error { message })
                    }
                };
                if let Some(a) = answer {
                    if !send(&mut ws, &a).await {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_sent_as_a_png_of_its_size_and_a_malformed_one_not_at_all() {
        use base64::Engine;
        let mut f = reflex_core::Frame::new(4, 3);
        f.rgb.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        let b64 = png_base64(&f).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 3));
        assert_eq!(&buf[..info.buffer_size()], &f.rgb[..]);
        f.rgb.pop();
        assert!(png_base64(&f).is_none());
    }

    #[test]
    fn tokens_are_random_hex_and_compared_whole() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..31]));
    }
}
