//! The bridge's side of the control tick allocates nothing: `read_state`, `read_scene`,
//! `write_command`, `judge` (with the task's judge, queued for the reward topic), `begin_judging`
//! and `now_ns` on a `RosRobot` are counted by a per-thread counting
//! allocator while joint states stream in over DDS at 1 kHz and the executor publishes every
//! command. Runs in a loopback-only network namespace.

use reflex_core::{Action, JointCommand, Observation, Robot, RobotState};
use reflex_ros::msg::{Header, JointState, Time};
use reflex_ros::{advertise, context, qos_service, BridgeParams, Reader, RosArgs, RosRobot};
use reflex_runtime::EStop;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

#[test]
fn the_bridge_side_of_a_tick_allocates_nothing_while_states_stream_in() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_bridge_side_of_a_tick_allocates_nothing_while_states_stream_in",
    ) {
        return;
    }
    let urdf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
    let args = RosArgs::parse(&[
        "-p".to_string(),
        "domain_id:=75".into(),
        "-p".into(),
        format!("urdf:={}", urdf.display()),
        "-p".into(),
        "base_link:=link0".into(),
    ])
    .unwrap();
    let mut r = Reader::new(args.parameters("/reflex").unwrap());
    let params = BridgeParams::read(&mut r).unwrap();
    r.finish().unwrap();
    let mut robot = RosRobot::connect(
        &params,
        "reflex",
        "/",
        reflex_ros::SceneSpec::default(),
        EStop::new(),
    )
    .unwrap();
    // The task's judge scores steps and the bridge queues each for the reward topic.
    robot.set_judge(Box::new(reflex_sim::TaskJudge::new(
        &reflex_sim::Task::load("pick_cube").unwrap(),
    )));
    let mut names: Vec<String> = robot.model().joint_names.to_vec();
    names.extend(
        robot
            .model()
            .gripper
            .as_ref()
            .unwrap()
            .finger_joints
            .iter()
            .cloned(),
    );

    // An arm driver: joint states at 1 kHz from its own participant.
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (params, stop) = (params.clone(), stop.clone());
        std::thread::spawn(move || {
            let ctx = context(&params).unwrap();
            let mut node = ctx
                .new_node(
                    ros2_client::NodeName::new("/", "fake_arm").unwrap(),
                    ros2_client::NodeOptions::new(),
                )
                .unwrap();
            let publisher =
                advertise::<JointState>(&mut node, "/joint_states", qos_service()).unwrap();
            let mut k = 0u64;
            while !stop.load(Ordering::Acquire) {
                k += 1;
                let _ = publisher.publish(JointState {
                    header: Header {
                        stamp: Time::from_ns(k * 1_000_000),
                        frame_id: String::new(),
                    },
                    name: names.clone(),
                    position: vec![0.01; names.len()],
                    velocity: vec![0.0; names.len()],
                    effort: vec![0.0; names.len()],
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let mut state = RobotState::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while robot.read_state(&mut state).is_err() {
        assert!(Instant::now() < deadline, "no joint state within 20 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut obs = Observation::default();
    let action = Action::default();
    let mut command = JointCommand {
        joint_pos_rad: state.joint_pos_rad,
        gripper_width_m: 0.04,
    };
    let before = allocations();
    let mut fresh = 0;
    for i in 0..2000 {
        if robot.read_state(&mut state).is_ok() {
            fresh += 1;
        }
        robot.read_scene(&mut obs);
        command.joint_pos_rad[0] = 0.01 + 1e-5 * i as f64;
        robot.write_command(&command).unwrap();
        if i % 50 == 0 {
            let _ = robot.judge(&obs, &action);
        }
        if i % 500 == 0 {
            robot.begin_judging(&obs);
        }
        let _ = robot.now_ns();
        std::thread::sleep(Duration::from_micros(500));
    }
    let counted = allocations() - before;
    stop.store(true, Ordering::Release);
    driver.join().unwrap();
    let sent = robot.stats().commands.load(Ordering::Relaxed);
    let judged = robot.stats().rewards_published.load(Ordering::Relaxed);
    drop(robot);
    assert!(fresh > 1500, "only {fresh} of 2000 reads were fresh");
    assert!(sent > 100, "the executor published {sent} commands");
    assert!(judged >= 30, "the executor published {judged} judged steps");
    assert_eq!(
        counted, 0,
        "the tick's side of the bridge allocated {counted} times"
    );
}
