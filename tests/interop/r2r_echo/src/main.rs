//! The r2r candidate of `reflex bench ros`: answers every `sensor_msgs/JointState` on
//! `/bench/joint_states` with a `std_msgs/Float64MultiArray` of its positions on
//! `/bench/commands`, reliable both ways, until killed. Set `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`
//! (the wrapper script does) so discovery stays on this machine.

use futures::{executor::LocalPool, stream::StreamExt, task::LocalSpawnExt};
use r2r::{std_msgs::msg::Float64MultiArray, QosProfile};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("ROS_AUTOMATIC_DISCOVERY_RANGE").as_deref() != Ok("LOCALHOST") {
        return Err("ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST (loopback only)".into());
    }
    let ctx = r2r::Context::create()?;
    let mut node = r2r::Node::create(ctx, "bench_r2r_echo", "")?;
    let qos = QosProfile::default().reliable().keep_last(10);
    let mut states =
        node.subscribe::<r2r::sensor_msgs::msg::JointState>("/bench/joint_states", qos.clone())?;
    let commands = node.create_publisher::<Float64MultiArray>("/bench/commands", qos)?;
    let mut pool = LocalPool::new();
    pool.spawner().spawn_local(async move {
        while let Some(s) = states.next().await {
            let _ = commands.publish(&Float64MultiArray {
                data: s.position,
                ..Default::default()
            });
        }
    })?;
    loop {
        node.spin_once(Duration::from_millis(5));
        pool.run_until_stalled();
    }
}
