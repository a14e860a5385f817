//! The r2r transport (`backend: r2r`, the `r2r` feature): the bridge's endpoints on an rcl
//! node of the sourced ROS 2, over whatever rmw it is configured with.
//!
//! Topics go through rcl's serialized-message calls: the bridge's own message structs are
//! encoded to and decoded from CDR ([`crate::transport::decode_cdr`]), so a topic needs only its
//! type's type support at run time (`objects_source: tf` needs `tf2_msgs` in the build's
//! `AMENT_PREFIX_PATH`). The node spins on a thread of its own; every stream the executor
//! drains wakes the executor's poll when it fills.
//!
//! rcl takes its domain from `ROS_DOMAIN_ID` and its discovery range from
//! `ROS_AUTOMATIC_DISCOVERY_RANGE`: the transport refuses a `domain_id` that differs, and with
//! `localhost_only` (the default) a range other than `LOCALHOST`.

use crate::bridge::BridgeError;
use crate::msg::TriggerResponse;
use crate::transport::{
    decode_cdr, encode_cdr, Inbox, Outbox, Qos, Transport, TriggerClient, TriggerServer, Wire,
};
use crate::{BridgeParams, BridgeStats};
use futures::{Future, Stream};
use r2r::std_srvs::srv::Trigger;
use r2r::QosProfile;
use rustdds::mio1::Waker;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread::JoinHandle;
use std::time::Duration;

/// Wakes the executor's poll (a `std` waker over its `mio` waker).
struct PollWake(Arc<Waker>);

impl Wake for PollWake {
    fn wake(self: Arc<Self>) {
        let _ = self.0.wake();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.wake();
    }
}

/// One rcl node of the r2r backend, while its endpoints are made.
pub struct R2r {
    node: r2r::Node,
    waker: std::task::Waker,
    stats: Arc<BridgeStats>,
}

impl R2r {
    /// Creates the node `name` in `namespace` on the process's rcl context; streams wake
    /// `waker`.
    pub fn new(
        params: &BridgeParams,
        name: &str,
        namespace: &str,
        waker: Arc<Waker>,
        stats: Arc<BridgeStats>,
    ) -> Result<Self, BridgeError> {
        crate::transport::rcl_environment_fits(params.domain_id, params.localhost_only, |k| {
            std::env::var(k).ok()
        })?;
        let ctx = r2r::Context::create().map_err(|e| BridgeError::Dds(format!("rcl init: {e}")))?;
        let node = r2r::Node::create(ctx, name, namespace)
            .map_err(|e| BridgeError::Dds(format!("node `{namespace}/{name}`: {e}")))?;
        Ok(Self {
            node,
            waker: Arc::new(PollWake(waker)).into(),
            stats,
        })
    }

    fn profile(qos: Qos) -> QosProfile {
        match qos {
            Qos::Stream => QosProfile::default().best_effort().volatile().keep_last(10),
            Qos::Command => QosProfile::default().reliable().volatile().keep_last(1),
            Qos::Latched => QosProfile::default()
                .reliable()
                .transient_local()
                .keep_last(1),
            Qos::Reliable => QosProfile::default().reliable().volatile().keep_last(10),
        }
    }
}

fn type_name<M: Wire>() -> String {
    format!("{}/msg/{}", M::PACKAGE, M::NAME)
}

fn refused(what: &str, type_: &str, e: r2r::Error) -> BridgeError {
    let hint = if matches!(e, r2r::Error::InvalidMessageType { .. }) {
        format!(
            " (`{type_}` was not in AMENT_PREFIX_PATH when the r2r backend was built: source \
             a ROS 2 that has it and rebuild)"
        )
    } else {
        String::new()
    };
    BridgeError::Dds(format!("{what}: {e}{hint}"))
}

type RawStream = Box<dyn Stream<Item = Vec<u8>> + Unpin + Send>;

struct R2rInbox<M> {
    stream: RawStream,
    waker: std::task::Waker,
    stats: Arc<BridgeStats>,
    topic: String,
    _m: PhantomData<fn() -> M>,
}

impl<M: Wire> Inbox<M> for R2rInbox<M> {
    fn take(&mut self) -> Option<M> {
        let mut cx = Context::from_waker(&self.waker);
        // Bounded: a stream of undecodable messages cannot hold the executor.
        for _ in 0..1024 {
            match Pin::new(&mut self.stream).poll_next(&mut cx) {
                Poll::Ready(Some(raw)) => match decode_cdr::<M>(&raw) {
                    Ok(m) => return Some(m),
                    Err(e) => {
                        let n = self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                        if n.is_multiple_of(1000) {
                            tracing::warn!("`{}`: undecodable message dropped: {e}", self.topic);
                        }
                    }
                },
                // Pending: the waker is registered; closed: the node is going.
                _ => return None,
            }
        }
        None
    }
}

struct R2rOutbox<M> {
    publisher: r2r::PublisherUntyped,
    buf: Vec<u8>,
    _m: PhantomData<fn(M)>,
}

impl<M: Wire> Outbox<M> for R2rOutbox<M> {
    fn publish(&mut self, msg: &M) -> bool {
        encode_cdr(msg, &mut self.buf).is_ok() && self.publisher.publish_raw(&self.buf).is_ok()
    }
}

type Requests = Box<dyn Stream<Item = r2r::ServiceRequest<Trigger::Service>> + Unpin + Send>;

struct R2rTriggerServer {
    requests: Requests,
    waker: std::task::Waker,
}

impl TriggerServer for R2rTriggerServer {
    fn answer(&mut self, answer: &mut dyn FnMut() -> TriggerResponse) -> usize {
        let mut cx = Context::from_waker(&self.waker);
        let mut n = 0;
        while let Poll::Ready(Some(req)) = Pin::new(&mut self.requests).poll_next(&mut cx) {
            n += 1;
            let r = answer();
            let resp = Trigger::Response {
                success: r.success,
                message: r.message,
            };
            if let Err(e) = req.respond(resp) {
                tracing::warn!("service response: {e}");
            }
        }
        n
    }
}

type Pending = Pin<Box<dyn Future<Output = r2r::Result<Trigger::Response>> + Send>>;

struct R2rTriggerClient {
    client: r2r::Client<Trigger::Service>,
    pending: Vec<Pending>,
    waker: std::task::Waker,
}

impl TriggerClient for R2rTriggerClient {
    fn call(&mut self) -> bool {
        match self.client.request(&Trigger::Request::default()) {
            Ok(f) => {
                // At most a few calls wait: older ones are given up.
                if self.pending.len() >= 16 {
                    drop(self.pending.remove(0));
                }
                self.pending.push(Box::pin(f));
                true
            }
            Err(e) => {
                tracing::warn!("service request: {e}");
                false
            }
        }
    }

    fn response(&mut self) -> Option<TriggerResponse> {
        let mut cx = Context::from_waker(&self.waker);
        for i in 0..self.pending.len() {
            if let Poll::Ready(r) = self.pending[i].as_mut().poll(&mut cx) {
                drop(self.pending.remove(i));
                return match r {
                    Ok(r) => Some(TriggerResponse {
                        success: r.success,
                        message: r.message,
                    }),
                    Err(e) => {
                        tracing::warn!("service response: {e}");
                        None
                    }
                };
            }
        }
        None
    }
}

impl Transport for R2r {
    fn subscribe<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Inbox<M>>, BridgeError> {
        let t = type_name::<M>();
        let stream = self
            .node
            .subscribe_raw(topic, &t, Self::profile(qos))
            .map_err(|e| refused(&format!("reader on `{topic}`"), &t, e))?;
        Ok(Box::new(R2rInbox::<M> {
            stream: Box::new(stream),
            waker: self.waker.clone(),
            stats: self.stats.clone(),
            topic: topic.to_owned(),
            _m: PhantomData,
        }))
    }

    fn advertise<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Outbox<M>>, BridgeError> {
        let t = type_name::<M>();
        let publisher = self
            .node
            .create_publisher_untyped(topic, &t, Self::profile(qos))
            .map_err(|e| refused(&format!("writer on `{topic}`"), &t, e))?;
        Ok(Box::new(R2rOutbox::<M> {
            publisher,
            buf: Vec::new(),
            _m: PhantomData,
        }))
    }

    fn trigger_server(&mut self, service: &str) -> Result<Box<dyn TriggerServer>, BridgeError> {
        let requests = self
            .node
            .create_service::<Trigger::Service>(service, QosProfile::services_default())
            .map_err(|e| BridgeError::Dds(format!("service `{service}`: {e}")))?;
        Ok(Box::new(R2rTriggerServer {
            requests: Box::new(requests),
            waker: self.waker.clone(),
        }))
    }

    fn trigger_client(&mut self, service: &str) -> Result<Box<dyn TriggerClient>, BridgeError> {
        let client = self
            .node
            .create_client::<Trigger::Service>(service, QosProfile::services_default())
            .map_err(|e| BridgeError::Dds(format!("client of `{service}`: {e}")))?;
        Ok(Box::new(R2rTriggerClient {
            client,
            pending: Vec::new(),
            waker: self.waker.clone(),
        }))
    }

    fn finish(self) -> Result<Box<dyn Send>, BridgeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut node = self.node;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("reflex-ros-rcl".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    node.spin_once(Duration::from_millis(20));
                }
            })
            .map_err(|e| BridgeError::Dds(format!("rcl spin thread: {e}")))?;
        Ok(Box::new(Spinner {
            stop,
            thread: Some(thread),
        }))
    }
}

/// Keeps the node spinning; dropping it stops the thread and destroys the node.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
