//! The seam between the bridge's executor and a ROS 2 client library.
//!
//! The executor (decoding, refusing, counting, the cells it shares with the tick) only sees
//! [`Inbox`]es it drains, [`Outbox`]es it publishes to and the two `std_srvs/Trigger` ends it
//! serves or calls. A [`Transport`] makes them on one node: [`Dds`] over ros2-client + rustdds
//! (the default, no ROS install), and `R2r` over the sourced ROS 2's rcl (the `r2r` feature).
//! Both wake the executor's `mio` poll when something arrives, so it never spins.
//!
//! Every message a transport cannot decode is dropped and counted in
//! [`BridgeStats::undecodable`](crate::BridgeStats::undecodable), never passed on.

use crate::bridge::{qos_command, qos_latched, qos_service, qos_stream, ros_name, BridgeError};
use crate::msg::{RosType, TriggerRequest, TriggerResponse};
use crate::BridgeStats;
use ros2_client::{Context, MessageTypeName, Node, QosProfile, ServiceMapping, ServiceTypeName};
use rustdds::mio1::{Interest, Registry, Token};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The QoS a topic needs, named by its role; each transport maps it to its own profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// Sensor-like streams (joint states, poses, images, operator input): best effort on the
    /// reader, so reliable and best-effort writers both match; newest few samples.
    Stream,
    /// Commands and reward steps: reliable, newest only, never waiting on a full window.
    Command,
    /// Latched operator state (the e-stop): reliable and transient-local.
    Latched,
    /// Reliable and volatile, as ROS 2's default (diagnostics, the intervention flag,
    /// the success topic).
    Reliable,
}

/// Messages of one subscription, drained by the executor.
pub trait Inbox<M>: Send {
    /// The next message received, or `None` when none is waiting.
    fn take(&mut self) -> Option<M>;
}

/// One publisher.
pub trait Outbox<M>: Send {
    /// Publishes `msg`; false if the client library refused it.
    fn publish(&mut self, msg: &M) -> bool;
}

/// The serving end of a `std_srvs/Trigger` service.
pub trait TriggerServer: Send {
    /// Answers every waiting request with `answer()`; returns how many were answered.
    fn answer(&mut self, answer: &mut dyn FnMut() -> TriggerResponse) -> usize;
}

/// The calling end of a `std_srvs/Trigger` service.
pub trait TriggerClient: Send {
    /// Sends a request (false if it could not be sent).
    fn call(&mut self) -> bool;
    /// A response to an earlier call, if one has come.
    fn response(&mut self) -> Option<TriggerResponse>;
}

/// A message type both transports carry: a serde struct in CDR field order with its ROS name.
pub trait Wire: RosType + Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<M: RosType + Serialize + DeserializeOwned + Clone + Send + 'static> Wire for M {}

/// Makes the endpoints of one node.
pub trait Transport {
    /// A subscription to `topic`.
    fn subscribe<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Inbox<M>>, BridgeError>;
    /// A publisher on `topic`.
    fn advertise<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Outbox<M>>, BridgeError>;
    /// A `std_srvs/Trigger` server named `service`.
    fn trigger_server(&mut self, service: &str) -> Result<Box<dyn TriggerServer>, BridgeError>;
    /// A `std_srvs/Trigger` client of `service`.
    fn trigger_client(&mut self, service: &str) -> Result<Box<dyn TriggerClient>, BridgeError>;
    /// Starts whatever the node needs to run and returns what keeps it alive: the executor
    /// drops it after every endpoint.
    fn finish(self) -> Result<Box<dyn Send>, BridgeError>;
}

/// The pure-Rust transport: one ros2-client node on a rustdds participant. Its readers are
/// registered with the executor's poll.
pub struct Dds {
    ctx: Context,
    node: Node,
    registry: Registry,
    stats: Arc<BridgeStats>,
    next_token: usize,
}

impl Dds {
    /// Endpoints on `node` of `ctx`, registered with `registry`.
    pub fn new(ctx: Context, node: Node, registry: Registry, stats: Arc<BridgeStats>) -> Self {
        Self {
            ctx,
            node,
            registry,
            stats,
            next_token: 1,
        }
    }

    fn register(
        &mut self,
        source: &mut impl rustdds::mio1::event::Source,
    ) -> Result<(), BridgeError> {
        // The executor drains every endpoint on any wake-up: tokens only need to be distinct.
        self.next_token += 1;
        self.registry
            .register(source, Token(self.next_token), Interest::READABLE)
            .map_err(|e| BridgeError::Dds(format!("poll registration: {e}")))
    }

    fn profile(qos: Qos) -> QosProfile {
        match qos {
            Qos::Stream => qos_stream(),
            Qos::Command => qos_command(),
            Qos::Latched => qos_latched(),
            Qos::Reliable => qos_service(),
        }
    }

    fn trigger_type() -> ServiceTypeName {
        ServiceTypeName::new("std_srvs", "Trigger")
    }
}

/// A DDS reader of `M`: every sample that fails to decode is counted and skipped.
struct DdsInbox<M: Wire> {
    sub: ros2_client::Subscription<M>,
    stats: Arc<BridgeStats>,
    topic: String,
}

impl<M: Wire> Inbox<M> for DdsInbox<M> {
    fn take(&mut self) -> Option<M> {
        // Bounded: a reader that keeps failing cannot hold the executor.
        for _ in 0..1024 {
            match self.sub.take() {
                Ok(Some((m, _))) => return Some(m),
                Ok(None) => return None,
                Err(e) => {
                    let n = self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(1000) {
                        tracing::warn!("`{}`: undecodable message dropped: {e:?}", self.topic);
                    }
                }
            }
        }
        None
    }
}

struct DdsOutbox<M: Wire> {
    publisher: ros2_client::Publisher<M>,
}

impl<M: Wire> Outbox<M> for DdsOutbox<M> {
    fn publish(&mut self, msg: &M) -> bool {
        self.publisher.publish(msg.clone()).is_ok()
    }
}

struct DdsTriggerServer {
    server: ros2_client::Server<TriggerRequest, TriggerResponse>,
}

impl TriggerServer for DdsTriggerServer {
    fn answer(&mut self, answer: &mut dyn FnMut() -> TriggerResponse) -> usize {
        let mut n = 0;
        while let Ok(Some((id, _req))) = self.server.receive_request() {
            n += 1;
            if let Err(e) = self.server.send_response(id, answer()) {
                tracing::warn!("service response: {e:?}");
            }
        }
        n
    }
}

struct DdsTriggerClient {
    client: ros2_client::Client<TriggerRequest, TriggerResponse>,
}

impl TriggerClient for DdsTriggerClient {
    fn call(&mut self) -> bool {
        match self.client.send_request(TriggerRequest::default()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("service request: {e:?}");
                false
            }
        }
    }

    fn response(&mut self) -> Option<TriggerResponse> {
        match self.client.receive_response() {
            Ok(Some((_id, r))) => Some(r),
            _ => None,
        }
    }
}

impl Transport for Dds {
    fn subscribe<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Inbox<M>>, BridgeError> {
        let mut sub = crate::bridge::subscribe::<M>(&mut self.node, topic, Self::profile(qos))?;
        self.register(&mut sub)?;
        Ok(Box::new(DdsInbox {
            sub,
            stats: self.stats.clone(),
            topic: topic.to_owned(),
        }))
    }

    fn advertise<M: Wire>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Outbox<M>>, BridgeError> {
        let t = self
            .node
            .create_topic(
                &ros_name(topic)?,
                MessageTypeName::new(M::PACKAGE, M::NAME),
                &Self::profile(qos),
            )
            .map_err(|e| BridgeError::Dds(format!("topic `{topic}`: {e:?}")))?;
        let publisher = self
            .node
            .create_publisher::<M>(&t, Some(Self::profile(qos)))
            .map_err(|e| BridgeError::Dds(format!("writer on `{topic}`: {e:?}")))?;
        Ok(Box::new(DdsOutbox { publisher }))
    }

    fn trigger_server(&mut self, service: &str) -> Result<Box<dyn TriggerServer>, BridgeError> {
        let mut server = self
            .node
            .create_server::<TriggerRequest, TriggerResponse>(
                ServiceMapping::Enhanced,
                &ros_name(service)?,
                &Self::trigger_type(),
                qos_service(),
                qos_service(),
            )
            .map_err(|e| BridgeError::Dds(format!("service `{service}`: {e:?}")))?;
        self.register(&mut server)?;
        Ok(Box::new(DdsTriggerServer { server }))
    }

    fn trigger_client(&mut self, service: &str) -> Result<Box<dyn TriggerClient>, BridgeError> {
        let mut client = self
            .node
            .create_client::<TriggerRequest, TriggerResponse>(
                ServiceMapping::Enhanced,
                &ros_name(service)?,
                &Self::trigger_type(),
                qos_service(),
                qos_service(),
            )
            .map_err(|e| BridgeError::Dds(format!("client of `{service}`: {e:?}")))?;
        self.register(&mut client)?;
        Ok(Box::new(DdsTriggerClient { client }))
    }

    fn finish(self) -> Result<Box<dyn Send>, BridgeError> {
        // The node leaves the participant before the participant goes.
        Ok(Box::new((self.node, self.ctx)))
    }
}

/// Checks that an rcl node started in the environment `var` describes would be on
/// `domain_id`, and on this machine only when `localhost_only`: rcl reads both from the
/// environment (`ROS_DOMAIN_ID`; `ROS_AUTOMATIC_DISCOVERY_RANGE`, or the older
/// `ROS_LOCALHOST_ONLY`), not from the node's parameters. Errors name the parameter.
pub fn rcl_environment_fits(
    domain_id: u16,
    localhost_only: bool,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(), BridgeError> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    let env_domain = match var("ROS_DOMAIN_ID") {
        None => 0,
        Some(d) => d.parse::<u16>().map_err(|_| BridgeError::Param {
            name: "domain_id",
            message: format!("ROS_DOMAIN_ID is `{d}`, not a domain number"),
        })?,
    };
    if domain_id != env_domain {
        return Err(BridgeError::Param {
            name: "domain_id",
            message: format!(
                "{domain_id} but ROS_DOMAIN_ID is {env_domain}: the r2r backend's rcl takes its \
                 domain from ROS_DOMAIN_ID (set it to {domain_id}, or drop the parameter)"
            ),
        });
    }
    let range = var("ROS_AUTOMATIC_DISCOVERY_RANGE");
    let localhost = match range.as_deref() {
        Some(r) => r == "LOCALHOST",
        None => var("ROS_LOCALHOST_ONLY").as_deref() == Some("1"),
    };
    if localhost_only && !localhost {
        return Err(BridgeError::Param {
            name: "localhost_only",
            message: format!(
                "true, but ROS_AUTOMATIC_DISCOVERY_RANGE is {}: the r2r backend's rmw takes \
                 its discovery range from the environment; set \
                 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, or localhost_only:=false for an arm \
                 on another machine",
                range.as_deref().unwrap_or("unset")
            ),
        });
    }
    Ok(())
}

/// A message in ROS 2's serialized form (what rmw hands over raw): a 4-byte encapsulation
/// header, then plain CDR in either byte order.
pub fn decode_cdr<M: DeserializeOwned>(raw: &[u8]) -> Result<M, String> {
    use rustdds::serialization::{deserialize_from_cdr_with_rep_id, RepresentationIdentifier};
    if raw.len() < 4 {
        return Err(format!("{} bytes: shorter than the CDR header", raw.len()));
    }
    let rep = RepresentationIdentifier::from_bytes(&raw[..2]).map_err(|e| e.to_string())?;
    if rep != RepresentationIdentifier::CDR_LE && rep != RepresentationIdentifier::CDR_BE {
        return Err(format!("encapsulation {:?}: not plain CDR", rep));
    }
    deserialize_from_cdr_with_rep_id::<M>(&raw[4..], rep)
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

/// `msg` in ROS 2's serialized form (little-endian CDR after its header), into `buf`.
pub fn encode_cdr<M: Serialize>(msg: &M, buf: &mut Vec<u8>) -> Result<(), String> {
    use rustdds::serialization::{to_writer_with_rep_id, RepresentationIdentifier};
    buf.clear();
    buf.extend_from_slice(&RepresentationIdentifier::CDR_LE.to_bytes());
    buf.extend_from_slice(&[0, 0]);
    to_writer_with_rep_id(&mut *buf, msg, RepresentationIdentifier::CDR_LE)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Header, JointState, Time};

    #[test]
    fn rcl_must_be_on_the_configured_domain_and_range() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        }
        let local = [("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")];
        assert!(rcl_environment_fits(0, true, env(&local)).is_ok());
        let e = rcl_environment_fits(71, true, env(&local)).unwrap_err();
        assert!(e.to_string().contains("`domain_id`"), "{e}");
        assert!(e.to_string().contains("ROS_DOMAIN_ID is 0"), "{e}");
        let on71 = [
            ("ROS_DOMAIN_ID", "71"),
            ("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        ];
        assert!(rcl_environment_fits(71, true, env(&on71)).is_ok());
        let bad = [("ROS_DOMAIN_ID", "seven")];
        assert!(rcl_environment_fits(7, false, env(&bad)).is_err());
        // Discovery beyond this machine is refused unless the parameter allows it.
        let subnet = [("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")];
        let e = rcl_environment_fits(0, true, env(&subnet)).unwrap_err();
        assert!(e.to_string().contains("`localhost_only`"), "{e}");
        assert!(rcl_environment_fits(0, false, env(&subnet)).is_ok());
        assert!(rcl_environment_fits(0, true, env(&[])).is_err());
        // The older variable counts when the newer one is unset.
        let old = [("ROS_LOCALHOST_ONLY", "1")];
        assert!(rcl_environment_fits(0, true, env(&old)).is_ok());
    }

    #[test]
    fn a_serialized_message_round_trips_and_garbage_is_refused() {
        let js = JointState {
            header: Header {
                stamp: Time { sec: 3, nanosec: 7 },
                frame_id: "base".into(),
            },
            name: vec!["j1".into(), "j2".into()],
            position: vec![0.5, -1.25],
            velocity: vec![],
            effort: vec![1.0],
        };
        let mut buf = Vec::new();
        encode_cdr(&js, &mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 1, 0, 0]);
        assert_eq!(decode_cdr::<JointState>(&buf).unwrap(), js);
        // The same message big-endian, as a peer on another host might send it.
        let mut be = vec![0, 0, 0, 0];
        rustdds::serialization::to_writer_with_rep_id(
            &mut be,
            &js,
            rustdds::serialization::RepresentationIdentifier::CDR_BE,
        )
        .unwrap();
        assert_eq!(decode_cdr::<JointState>(&be).unwrap(), js);
        assert!(decode_cdr::<JointState>(&buf[..3]).is_err());
        assert!(decode_cdr::<JointState>(&buf[..20]).is_err(), "truncated");
        let mut pl = buf.clone();
        pl[1] = 3;
        assert!(decode_cdr::<JointState>(&pl).is_err(), "parameter-list CDR");
    }
}
