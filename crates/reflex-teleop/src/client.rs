//! A blocking client of the session's WebSocket: the same protocol the page speaks, for a
//! scripted operator, a device bridge on another machine, or a test. One thread owns it; every
//! call returns within the time it is given.

use crate::protocol::{ClientMessage, ServerMessage, Status};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

/// Why the client failed; names the address or the message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address could not be used or reached.
    #[error("{url}: {message}")]
    Connect {
        /// The address (its token removed).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The connection failed or closed.
    #[error("teleop WebSocket: {0}")]
    Link(String),
    /// The session sent a message this client could not read.
    #[error("teleop WebSocket: unreadable message from the session: {0}")]
    Protocol(String),
}

/// A connection to a session, as an operator.
pub struct OperatorClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    seq: u64,
    hello: Option<ServerMessage>,
    errors: Vec<String>,
}

/// How long one read waits before the caller's deadline is checked again.
const READ_SLICE: Duration = Duration::from_millis(5);

fn without_token(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

impl OperatorClient {
    /// Connects to `ws_url` (`ws://HOST:PORT/ws?token=...`, as
    /// `TeleopServer::ws_url` prints it) within `timeout`.
    pub fn connect(ws_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let fail = |message: String| ClientError::Connect {
            url: without_token(ws_url),
            message,
        };
        let uri: tungstenite::http::Uri = ws_url
            .parse()
            .map_err(|e| fail(format!("not a WebSocket address: {e}")))?;
        if uri.scheme_str() != Some("ws") {
            return Err(fail("expected a ws:// address".into()));
        }
        let host = uri.host().ok_or_else(|| fail("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("the host has no address".into()))?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .and_then(|_| stream.set_nodelay(true))
            .map_err(|e| fail(e.to_string()))?;
        let (ws, _) = tungstenite::client(ws_url, MaybeTlsStream::Plain(stream)).map_err(|e| {
            fail(match e {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                    format!("refused with HTTP {}", r.status())
                }
                e => e.to_string(),
            })
        })?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(READ_SLICE))
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(Self {
            ws,
            seq: 0,
            hello: None,
            errors: Vec::new(),
        })
    }

    /// The session's `hello`, once it has arrived.
    pub fn hello(&self) -> Option<&ServerMessage> {
        self.hello.as_ref()
    }

    /// `error` messages the session sent since the last call (a refused message each).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Reads until a `status` arrives or `wait` has passed; camera frames are skipped, the
    /// `hello` and `error` messages are kept. The newest status read is returned (older ones
    /// waiting behind it are passed over).
    pub fn next_status(&mut self, wait: Duration) -> Result<Option<Status>, ClientError> {
        let deadline = Instant::now() + wait;
        let mut newest = None;
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let text = text.as_str();
                    if text.starts_with(r#"{"type":"frame""#) {
                        continue;
                    }
                    let msg: ServerMessage = serde_json::from_str(text)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    match msg {
                        ServerMessage::Status(s) => newest = Some(*s),
                        ServerMessage::Error { message } => self.errors.push(message),
                        m @ ServerMessage::Hello { .. } => self.hello = Some(m),
                        _ => {}
                    }
                    // Keep reading what is already there, without waiting for more.
                    if newest.is_some() {
                        continue;
                    }
                }
                Ok(tungstenite::Message::Close(_)) => {
                    return Err(ClientError::Link(
                        "the session closed the connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if newest.is_some() || Instant::now() >= deadline {
                        return Ok(newest);
                    }
                }
                Err(e) => return Err(ClientError::Link(e.to_string())),
            }
        }
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(tungstenite::Message::text(text))
            .map_err(|e| ClientError::Link(e.to_string()))
    }

    /// Sends an `input` with the next sequence number; returns it.
    pub fn input(
        &mut self,
        motion: [f64; 6],
        gripper: f64,
        intervene: bool,
    ) -> Result<u64, ClientError> {
        self.seq += 1;
        let msg = ClientMessage::Input {
            seq: self.seq,
            motion: motion.map(|v| {
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }),
            gripper: if gripper.is_finite() {
                gripper.clamp(-1.0, 1.0)
            } else {
                0.0
            },
            intervene,
        };
        self.send(&msg)?;
        Ok(self.seq)
    }

    /// Closes the connection politely (within the socket's timeouts).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
