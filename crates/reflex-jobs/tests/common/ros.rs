//! The simulated arm served over DDS with `launch/config/sim_arm.yaml`, and the bridge's
//! arguments that reach it (the ROS 2 tests and the fleet's real-arm test share them).

use reflex_jobs::ros::SimServedArm;
use reflex_ros::arm_server::{serve, ArmServerSettings, ArmServerStats};
use reflex_ros::{BridgeParams, Reader, RosArgs};
use reflex_sim::Task;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The ROS arguments of a node run with `launch/config/sim_arm.yaml` on `domain`.
pub fn ros_args(domain: u32) -> RosArgs {
    ros_args_with(domain, &[])
}

/// [`ros_args`] with more `-p name:=value` parameters after the file's.
pub fn ros_args_with(domain: u32, extra: &[&str]) -> RosArgs {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut argv = vec![
        "--params-file".to_string(),
        repo.join("launch/config/sim_arm.yaml")
            .display()
            .to_string(),
        "-p".into(),
        format!("domain_id:={domain}"),
        "-p".into(),
        format!("urdf:={}", repo.join("urdf/reflex_arm.urdf").display()),
    ];
    // The same tests over the r2r backend (scripts/test-r2r.sh): its rcl takes the domain from
    // the environment, and the cube comes from the pose array (PyPI's ROS 2 has no tf2_msgs).
    if let Ok(backend) = std::env::var("REFLEX_ROS_BACKEND") {
        for p in [
            format!("backend:={backend}"),
            "objects_source:=pose_array".into(),
            "objects_topic:=/objects".into(),
        ] {
            argv.push("-p".into());
            argv.push(p);
        }
        std::env::set_var("ROS_DOMAIN_ID", domain.to_string());
    }
    for p in extra {
        argv.push("-p".into());
        argv.push(p.to_string());
    }
    RosArgs::parse(&argv).unwrap()
}

pub fn params(domain: u32) -> BridgeParams {
    let mut r = Reader::new(ros_args(domain).parameters("/reflex").unwrap());
    let p = BridgeParams::read(&mut r).unwrap();
    r.finish().unwrap();
    p
}

/// The simulated arm served over DDS at 250 Hz (poses at 50 Hz, cameras at `camera_rate_hz`
/// and `camera_size`) on a thread until the flag is raised; with the server's counters.
pub fn serve_sim_arm(
    task: &Task,
    p: &BridgeParams,
    seed: u64,
    camera_rate_hz: f64,
    camera_size: (usize, usize),
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
    Arc<ArmServerStats>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ArmServerStats::default());
    let server = {
        let (task, p, stop, stats) = (task.clone(), p.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || {
            let mut arm = SimServedArm::new(&task, 250.0, seed).unwrap();
            let settings = ArmServerSettings {
                node_name: "reflex_sim_arm".into(),
                namespace: "/".into(),
                params: p,
                rate_hz: 250.0,
                scene_rate_hz: 50.0,
                camera_rate_hz,
                camera_size,
            };
            serve(&mut arm, &settings, &stop, &stats).unwrap();
        })
    };
    (stop, server, stats)
}
