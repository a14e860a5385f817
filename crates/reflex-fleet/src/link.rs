//! The Zenoh side: one session per process, the learner's a router listening on its endpoint,
//! each actor's a peer that connects to it and listens nowhere. Nothing is discovered: multicast and gossip scouting
//! are off, the only endpoints are the ones given.
//!
//! Key expressions, under `reflex/<run>`:
//!
//! | key | from | to | what |
//! |---|---|---|---|
//! | `transitions/<stream>` | actor | learner | [`Batch`] |
//! | `ack/<stream>` | learner | that actor | [`Ack`] |
//! | `status` | learner | actors | [`Status`], a few times a second |
//! | `weights` | learner | actors | [`Weights`], published and also answered to queries |
//! | `base` | learner | actors | the base policy file, answered to queries |
//! | `alive/learner`, `alive/actor/<stream>` | | | liveliness tokens |
//!
//! Every call that waits has a deadline: queries carry a timeout, publications on a loop's
//! thread never block (congestion drops them: batches are resent until acknowledged, status is
//! latest-only), weights wait for room on a thread of their own (latest wins while they wait;
//! Zenoh closes a link stuck longer than its `wait_before_close`), and received messages are
//! handed over through bounded queues that count what they drop.

use crate::wire::{Ack, Status, Weights};
use crossbeam::channel::{bounded, Receiver, TrySendError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zenoh::qos::CongestionControl;
use zenoh::sample::SampleKind;
use zenoh::Wait;

/// How a process joins the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSettings {
    /// The learner's endpoint: `tcp/HOST:PORT` or `tls/HOST:PORT`.
    pub endpoint: String,
    /// A Zenoh configuration file (JSON5) read first: TLS certificates, user/password
    /// authentication, access control. The endpoint and scouting settings above override it.
    pub zenoh_config: Option<PathBuf>,
    /// The run's name: the key prefix `reflex/<run>`.
    pub run: String,
    /// Received batches the learner holds before it drops (and counts) new ones.
    pub queue: usize,
}

/// Why the link could not be set up; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A setting is malformed.
    #[error("{field}: {why}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Zenoh refused.
    #[error("zenoh: {0}")]
    Zenoh(String),
}

fn zerr(e: impl std::fmt::Display) -> LinkError {
    LinkError::Zenoh(e.to_string())
}

impl LinkSettings {
    /// Checks the endpoint and run name.
    pub fn validate(&self) -> Result<(), LinkError> {
        let bad = |field, why: String| Err(LinkError::Setting { field, why });
        let Some((proto, addr)) = self.endpoint.split_once('/') else {
            return bad(
                "endpoint",
                format!("`{}` is not PROTOCOL/HOST:PORT", self.endpoint),
            );
        };
        if !matches!(proto, "tcp" | "tls") {
            return bad(
                "endpoint",
                format!("`{proto}`: this build speaks tcp and tls only"),
            );
        }
        let addr = addr.split('#').next().unwrap_or(addr);
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return bad(
                "endpoint",
                format!("`{addr}` has no HOST:PORT (a port is required)"),
            );
        }
        if self.run.is_empty()
            || !self
                .run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(
                "run",
                format!("`{}`: letters, digits, - _ . only", self.run),
            );
        }
        if self.queue == 0 {
            return bad("queue", "must be positive".into());
        }
        Ok(())
    }

    fn key(&self, rest: &str) -> String {
        format!("reflex/{}/{rest}", self.run)
    }

    /// The Zenoh configuration of a learner (`router`, listening) or an actor (`peer`,
    /// connecting).
    pub fn zenoh_config(&self, learner: bool) -> Result<zenoh::Config, LinkError> {
        self.validate()?;
        let mut c = match &self.zenoh_config {
            Some(p) => zenoh::Config::from_file(p).map_err(|e| LinkError::Setting {
                field: "zenoh_config",
                why: format!("{}: {e}", p.display()),
            })?,
            None => zenoh::Config::default(),
        };
        let ep = serde_json::to_string(&[&self.endpoint]).expect("a string list");
        let set = |c: &mut zenoh::Config, k: &str, v: &str| {
            c.insert_json5(k, v)
                .map_err(|e| LinkError::Zenoh(format!("{k}: {e}")))
        };
        set(&mut c, "scouting/multicast/enabled", "false")?;
        set(&mut c, "scouting/gossip/enabled", "false")?;
        if learner {
            set(&mut c, "mode", "\"router\"")?;
            set(&mut c, "listen/endpoints", &ep)?;
            set(&mut c, "connect/endpoints", "[]")?;
        } else {
            // A peer that listens nowhere and discovers nothing: it connects to the learner
            // only. (A Zenoh client would refuse to open while the learner is away; an actor
            // may start before its learner, and outlives it: it keeps trying in the
            // background.)
            set(&mut c, "mode", "\"peer\"")?;
            set(&mut c, "listen/endpoints", "[]")?;
            set(&mut c, "connect/endpoints", &ep)?;
            set(&mut c, "connect/exit_on_failure", "false")?;
            set(&mut c, "connect/timeout_ms", "-1")?;
            set(
                &mut c,
                "connect/retry",
                "{period_init_ms: 250, period_max_ms: 1000, period_increase_factor: 2}",
            )?;
        }
        Ok(c)
    }
}

/// Peers coming and going, from liveliness tokens.
#[derive(Debug, Default)]
pub struct Presence {
    /// Tokens seen appearing.
    pub joined: AtomicU64,
    /// Tokens seen disappearing (a peer gone, or its link).
    pub left: AtomicU64,
    /// Tokens present now.
    pub alive: AtomicU64,
}

impl Presence {
    fn record(&self, kind: SampleKind) {
        match kind {
            SampleKind::Put => {
                self.joined.fetch_add(1, Ordering::Relaxed);
                self.alive.fetch_add(1, Ordering::Relaxed);
            }
            SampleKind::Delete => {
                self.left.fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .alive
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                        Some(a.saturating_sub(1))
                    });
            }
        }
    }
}

/// The learner's end of the fleet.
pub struct LearnerLink {
    session: zenoh::Session,
    settings: LinkSettings,
    batches: Receiver<Vec<u8>>,
    /// Batches dropped because the learner's queue was full (the actors resend them).
    pub queue_drops: Arc<AtomicU64>,
    latest: Arc<Mutex<Option<Vec<u8>>>>,
    to_send: Option<crossbeam::channel::Sender<()>>,
    sender: Option<std::thread::JoinHandle<()>>,
    status: zenoh::pubsub::Publisher<'static>,
    /// Actor tokens seen.
    pub actors: Arc<Presence>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
    _queryables: Vec<zenoh::query::Queryable<()>>,
    _token: zenoh::liveliness::LivelinessToken,
}

impl LearnerLink {
    /// Opens the learner's router on the endpoint; answers queries for the base policy file
    /// `base` and the newest weights from now on.
    pub fn open(settings: &LinkSettings, base: Vec<u8>) -> Result<Self, LinkError> {
        let session = zenoh::open(settings.zenoh_config(true)?)
            .wait()
            .map_err(zerr)?;
        let (tx, batches) = bounded::<Vec<u8>>(settings.queue);
        let queue_drops = Arc::new(AtomicU64::new(0));
        let drops = queue_drops.clone();
        let sub = session
            .declare_subscriber(settings.key("transitions/*"))
            .callback(move |s| {
                let bytes = s.payload().to_bytes().into_owned();
                if let Err(TrySendError::Full(_)) = tx.try_send(bytes) {
                    drops.fetch_add(1, Ordering::Relaxed);
                }
            })
            .wait()
            .map_err(zerr)?;
        let actors = Arc::new(Presence::default());
        let seen = actors.clone();
        let alive = session
            .liveliness()
            .declare_subscriber(settings.key("alive/actor/*"))
            .history(true)
            .callback(move |s| seen.record(s.kind()))
            .wait()
            .map_err(zerr)?;
        let latest: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
        let answer = |key: String, held: Arc<Mutex<Option<Vec<u8>>>>| {
            session
                .declare_queryable(key)
                .callback(move |q| {
                    let bytes = held.lock().ok().and_then(|b| b.clone());
                    if let Some(bytes) = bytes {
                        let _ = q.reply(q.key_expr().clone(), bytes).wait();
                    }
                })
                .wait()
                .map_err(zerr)
        };
        let q_weights = answer(settings.key("weights"), latest.clone())?;
        let q_base = answer(settings.key("base"), Arc::new(Mutex::new(Some(base))))?;
        let publisher = |key: String| {
            session
                .declare_publisher(key)
                .congestion_control(CongestionControl::Drop)
                .wait()
                .map_err(zerr)
        };
        let status = publisher(settings.key("status"))?;
        // Weights (hundreds of kB) go out from a thread of their own that waits for room in
        // the link's queue (a message that does not fit would be dropped whole): the
        // learner's loop only hands over the newest and never waits.
        let weights = session
            .declare_publisher(settings.key("weights"))
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(zerr)?;
        let (to_send, pending) = bounded::<()>(1);
        let held = latest.clone();
        let sender = std::thread::Builder::new()
            .name("reflex-weights-tx".into())
            .spawn(move || {
                while pending.recv().is_ok() {
                    let bytes = held.lock().ok().and_then(|b| b.clone());
                    if let Some(bytes) = bytes {
                        if let Err(e) = weights.put(bytes).wait() {
                            tracing::warn!("weights not published: {e}");
                        }
                    }
                }
            })
            .map_err(zerr)?;
        let token = session
            .liveliness()
            .declare_token(settings.key("alive/learner"))
            .wait()
            .map_err(zerr)?;
        Ok(Self {
            session,
            settings: settings.clone(),
            batches,
            queue_drops,
            latest,
            to_send: Some(to_send),
            sender: Some(sender),
            status,
            actors,
            _subs: vec![sub, alive],
            _queryables: vec![q_weights, q_base],
            _token: token,
        })
    }

    /// The next received batch's bytes, if any.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.batches.try_recv().ok()
    }

    /// Sends `ack` to its stream.
    pub fn ack(&self, ack: &Ack) {
        let key = self.settings.key(&format!("ack/{:016x}", ack.stream));
        if let Err(e) = self
            .session
            .put(key, ack.encode())
            .congestion_control(CongestionControl::Drop)
            .wait()
        {
            tracing::warn!("ack not sent: {e}");
        }
    }

    /// Broadcasts the learner's status.
    pub fn status(&self, status: &Status) {
        if let Err(e) = self.status.put(status.encode()).wait() {
            tracing::warn!("status not sent: {e}");
        }
    }

    /// Publishes weights to every actor, and answers later queries with them.
    pub fn publish(&self, w: &Weights) {
        let bytes = w.encode();
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(bytes);
        }
        // A publication still waiting takes the newest bytes when it goes: latest wins.
        if let Some(tx) = &self.to_send {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for LearnerLink {
    fn drop(&mut self) {
        self.to_send = None;
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

/// What an actor process hears from its learner.
#[derive(Debug, Default)]
pub struct Heard {
    /// Whether the learner's token is present.
    pub learner_alive: AtomicBool,
    /// Times the learner's token appeared (the first connection counts).
    pub learner_arrivals: AtomicU64,
    /// Times it disappeared.
    pub learner_departures: AtomicU64,
    /// The newest status, and when it came.
    pub status: Mutex<Option<(Status, Instant)>>,
    /// Messages that could not be read (named in the log).
    pub malformed: AtomicU64,
}

/// An actor process's end of the fleet (shared by its runtimes' streams).
pub struct ActorLink {
    session: zenoh::Session,
    settings: LinkSettings,
    /// What the learner said.
    pub heard: Arc<Heard>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
}

impl ActorLink {
    /// Connects to the learner (or keeps trying in the background if it is not there yet).
    pub fn open(settings: &LinkSettings) -> Result<Self, LinkError> {
        let session = zenoh::open(settings.zenoh_config(false)?)
            .wait()
            .map_err(zerr)?;
        let heard = Arc::new(Heard::default());
        let h = heard.clone();
        let alive = session
            .liveliness()
            .declare_subscriber(settings.key("alive/learner"))
            .history(true)
            .callback(move |s| match s.kind() {
                SampleKind::Put => {
                    h.learner_alive.store(true, Ordering::Release);
                    h.learner_arrivals.fetch_add(1, Ordering::AcqRel);
                }
                SampleKind::Delete => {
                    h.learner_alive.store(false, Ordering::Release);
                    h.learner_departures.fetch_add(1, Ordering::AcqRel);
                }
            })
            .wait()
            .map_err(zerr)?;
        let h = heard.clone();
        let status = session
            .declare_subscriber(settings.key("status"))
            .callback(move |s| match Status::decode(&s.payload().to_bytes()) {
                Ok(st) => {
                    if let Ok(mut l) = h.status.lock() {
                        *l = Some((st, Instant::now()));
                    }
                }
                Err(e) => {
                    h.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("status refused: {e}");
                }
            })
            .wait()
            .map_err(zerr)?;
        Ok(Self {
            session,
            settings: settings.clone(),
            heard,
            _subs: vec![alive, status],
        })
    }

    /// Asks the learner for `what` (`base` or `weights`), waiting at most `timeout`.
    pub fn query(&self, what: &str, timeout: Duration) -> Option<Vec<u8>> {
        let replies = self
            .session
            .get(self.settings.key(what))
            .timeout(timeout)
            .wait()
            .ok()?;
        let deadline = Instant::now() + timeout + Duration::from_millis(100);
        while let Ok(Some(reply)) =
            replies.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Ok(sample) = reply.result() {
                return Some(sample.payload().to_bytes().into_owned());
            }
        }
        None
    }

    /// Calls `on` with every weights message published from now on (on Zenoh's thread: keep it
    /// short).
    pub fn on_weights(
        &mut self,
        on: impl Fn(Result<Weights, crate::wire::WireError>) + Send + Sync + 'static,
    ) -> Result<(), LinkError> {
        let sub = self
            .session
            .declare_subscriber(self.settings.key("weights"))
            .callback(move |s| on(Weights::decode(&s.payload().to_bytes())))
            .wait()
            .map_err(zerr)?;
        self._subs.push(sub);
        Ok(())
    }

    /// A new stream of this process: its liveliness token, its batch key, its acks.
    pub fn stream(&mut self, stream: u64) -> Result<StreamLink, LinkError> {
        let (tx, acks) = bounded::<Ack>(64);
        let h = self.heard.clone();
        let sub = self
            .session
            .declare_subscriber(self.settings.key(&format!("ack/{stream:016x}")))
            .callback(move |s| match Ack::decode(&s.payload().to_bytes()) {
                Ok(a) if a.stream == stream => {
                    let _ = tx.try_send(a);
                }
                Ok(_) => {}
                Err(e) => {
                    h.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("ack refused: {e}");
                }
            })
            .wait()
            .map_err(zerr)?;
        let token = self
            .session
            .liveliness()
            .declare_token(self.settings.key(&format!("alive/actor/{stream:016x}")))
            .wait()
            .map_err(zerr)?;
        let publisher = self
            .session
            .declare_publisher(self.settings.key(&format!("transitions/{stream:016x}")))
            .congestion_control(CongestionControl::Drop)
            .wait()
            .map_err(zerr)?;
        Ok(StreamLink {
            publisher,
            acks,
            _sub: sub,
            _token: token,
        })
    }
}

/// One actor stream's sending end.
pub struct StreamLink {
    publisher: zenoh::pubsub::Publisher<'static>,
    acks: Receiver<Ack>,
    _sub: zenoh::pubsub::Subscriber<()>,
    _token: zenoh::liveliness::LivelinessToken,
}

impl StreamLink {
    /// Sends a batch's bytes (never blocks: a congested link drops it; unacknowledged batches
    /// are sent again).
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        self.publisher.put(bytes).wait().is_ok()
    }

    /// The next acknowledgement received, if any.
    pub fn try_ack(&self) -> Option<Ack> {
        self.acks.try_recv().ok()
    }
}
