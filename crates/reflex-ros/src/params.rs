//! The bridge's parameters, typed: read from a [`ParamSet`] (parameter files and `-p`), each
//! documented with its unit and default. A missing required parameter, a value of the wrong
//! type or range, and a parameter nobody reads are errors naming the parameter and where it
//! came from.

use crate::args::{ParamSet, ParamValue, Source};
use reflex_core::{ARM_DOF, MIN_ARM_DOF};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A bad parameter; names it and its source.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A required parameter has no value.
    #[error("parameter `{name}` is required ({hint})")]
    Missing {
        /// The parameter.
        name: String,
        /// What it is.
        hint: &'static str,
    },
    /// A parameter has the wrong type or an invalid value.
    #[error("parameter `{name}` (from {from}): {message}")]
    Invalid {
        /// The parameter.
        name: String,
        /// Where its value came from.
        from: Source,
        /// What is wrong.
        message: String,
    },
    /// Parameters nobody reads (a typo, or a parameter of another node).
    #[error("unknown parameter(s): {0}")]
    Unknown(String),
}

/// Reads typed parameters from a [`ParamSet`], remembering which were read so that
/// [`Reader::finish`] can refuse the rest.
pub struct Reader {
    set: ParamSet,
    read: BTreeSet<String>,
}

impl Reader {
    /// A reader over `set`.
    pub fn new(set: ParamSet) -> Self {
        Self {
            set,
            read: BTreeSet::new(),
        }
    }

    fn get(&mut self, name: &str) -> Option<(ParamValue, Source)> {
        self.read.insert(name.to_owned());
        self.set.values.get(name).cloned()
    }

    fn invalid(name: &str, source: Source, message: String) -> ParamError {
        ParamError::Invalid {
            name: name.to_owned(),
            from: source,
            message,
        }
    }

    /// A string parameter, or `default`.
    pub fn string(&mut self, name: &str, default: &str) -> Result<String, ParamError> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some((ParamValue::String(s), _)) => Ok(s),
            Some((v, src)) => Err(Self::invalid(
                name,
                src,
                format!("expected a string, got a {}", v.type_name()),
            )),
        }
    }

    /// A required string parameter.
    pub fn required_string(
        &mut self,
        name: &str,
        hint: &'static str,
    ) -> Result<String, ParamError> {
        let s = self.string(name, "")?;
        if s.is_empty() {
            return Err(ParamError::Missing {
                name: name.to_owned(),
                hint,
            });
        }
        Ok(s)
    }

    /// A boolean parameter, or `default`.
    pub fn bool(&mut self, name: &str, default: bool) -> Result<bool, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some((ParamValue::Bool(b), _)) => Ok(b),
            Some((v, src)) => Err(Self::invalid(
                name,
                src,
                format!("expected true or false, got a {}", v.type_name()),
            )),
        }
    }

    /// A number inside `[min, max]`, or `default` (integers are accepted for doubles).
    pub fn double(
        &mut self,
        name: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ParamError> {
        let (v, src) = match self.get(name) {
            None => return Ok(default),
            Some((ParamValue::Double(d), src)) => (d, src),
            Some((ParamValue::Integer(i), src)) => (i as f64, src),
            Some((v, src)) => {
                return Err(Self::invalid(
                    name,
                    src,
                    format!("expected a number, got a {}", v.type_name()),
                ))
            }
        };
        if !(v.is_finite() && v >= min && v <= max) {
            return Err(Self::invalid(
                name,
                src,
                format!("{v} is outside [{min}, {max}]"),
            ));
        }
        Ok(v)
    }

    /// An integer inside `[min, max]`, or `default`.
    pub fn integer(
        &mut self,
        name: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some((ParamValue::Integer(i), _)) if (min..=max).contains(&i) => Ok(i),
            Some((ParamValue::Integer(i), src)) => Err(Self::invalid(
                name,
                src,
                format!("{i} is outside [{min}, {max}]"),
            )),
            Some((v, src)) => Err(Self::invalid(
                name,
                src,
                format!("expected an integer, got a {}", v.type_name()),
            )),
        }
    }

    /// An integer array, or `default`.
    pub fn integers(&mut self, name: &str, default: &[i64]) -> Result<Vec<i64>, ParamError> {
        match self.get(name) {
            None => Ok(default.to_vec()),
            Some((ParamValue::IntegerArray(v), _)) => Ok(v),
            Some((v, src)) => Err(Self::invalid(
                name,
                src,
                format!("expected a list of integers, got a {}", v.type_name()),
            )),
        }
    }

    /// One of `options`, or `default`.
    pub fn choice(
        &mut self,
        name: &str,
        default: &str,
        options: &[&str],
    ) -> Result<String, ParamError> {
        let value = self.string(name, default)?;
        if options.contains(&value.as_str()) {
            return Ok(value);
        }
        let src = self.source(name);
        Err(Self::invalid(
            name,
            src,
            format!("`{value}`: expected one of {}", options.join(", ")),
        ))
    }

    /// A string array of `min..=max` entries, or `default`.
    pub fn strings_counted(
        &mut self,
        name: &str,
        default: &[&str],
        min: usize,
        max: usize,
    ) -> Result<Vec<String>, ParamError> {
        let v = self.strings(name, default)?;
        if (min..=max).contains(&v.len()) {
            return Ok(v);
        }
        let src = self.source(name);
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        Err(Self::invalid(
            name,
            src,
            format!("expected {expected} names, got {}", v.len()),
        ))
    }

    /// Whether `name` was given a value (in a file or with `-p`).
    pub fn is_set(&self, name: &str) -> bool {
        self.set.values.contains_key(name)
    }

    fn source(&self, name: &str) -> Source {
        self.set
            .values
            .get(name)
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Default)
    }

    /// A string array, or `default`.
    pub fn strings(&mut self, name: &str, default: &[&str]) -> Result<Vec<String>, ParamError> {
        match self.get(name) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some((ParamValue::StringArray(v), _)) => Ok(v),
            Some((v, src)) => Err(Self::invalid(
                name,
                src,
                format!("expected a list of strings, got a {}", v.type_name()),
            )),
        }
    }

    /// An optional array of one finite number per arm joint (6 or 7: the bridge checks the
    /// count against the URDF's arm).
    pub fn joint_array(&mut self, name: &str) -> Result<Option<Vec<f64>>, ParamError> {
        self.numbers_counted(name, "one per arm joint", MIN_ARM_DOF, ARM_DOF)
    }

    /// An optional array of exactly `N` finite numbers (`what` says what they are).
    pub fn numbers<const N: usize>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Option<[f64; N]>, ParamError> {
        Ok(self
            .numbers_counted(name, what, N, N)?
            .map(|v| v.try_into().expect("counted")))
    }

    /// An optional array of `min..=max` finite numbers (`what` says what they are).
    pub fn numbers_counted(
        &mut self,
        name: &str,
        what: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<Vec<f64>>, ParamError> {
        let count = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        let (v, src) = match self.get(name) {
            None => return Ok(None),
            Some((ParamValue::DoubleArray(v), src)) => (v, src),
            Some((ParamValue::IntegerArray(v), src)) => {
                (v.into_iter().map(|i| i as f64).collect(), src)
            }
            Some((v, src)) => {
                return Err(Self::invalid(
                    name,
                    src,
                    format!(
                        "expected a list of {count} numbers ({what}), got a {}",
                        v.type_name()
                    ),
                ))
            }
        };
        if !(min..=max).contains(&v.len()) {
            return Err(Self::invalid(
                name,
                src,
                format!("expected {count} numbers ({what}), got {}", v.len()),
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Self::invalid(
                name,
                src,
                format!("element {i} is not finite"),
            ));
        }
        Ok(Some(v))
    }

    /// Refuses every parameter that was set but never read, naming each and its source.
    pub fn finish(self) -> Result<(), ParamError> {
        let unknown: Vec<String> = self
            .set
            .values
            .iter()
            .filter(|(k, _)| !self.read.contains(*k))
            .map(|(k, (_, src))| format!("`{k}` (from {src})"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ParamError::Unknown(unknown.join(", ")))
        }
    }
}

/// Which ROS 2 client library carries the bridge's topics and services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Pure-Rust DDS (ros2-client + rustdds): no ROS install needed to build or run.
    Rustdds,
    /// r2r over the sourced ROS 2's rcl and rmw (the `r2r` feature; built where ROS 2 is
    /// sourced). Its domain is `ROS_DOMAIN_ID` and its discovery range
    /// `ROS_AUTOMATIC_DISCOVERY_RANGE`, as for every rcl node.
    R2r,
}

/// How arm commands reach the robot's controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandInterface {
    /// A `forward_command_controller` on positions (`forward_position_controller`):
    /// `std_msgs/Float64MultiArray` on `<controller>/commands`, one value per joint, in
    /// `joint_names` order.
    ForwardPosition,
    /// A `joint_trajectory_controller`: a one-point `trajectory_msgs/JointTrajectory` on
    /// `<controller>/joint_trajectory` every tick, reached after `trajectory_lead_s`.
    JointTrajectory,
    /// A `forward_command_controller` on velocities (`forward_velocity_controller`, as UR
    /// drivers offer): `std_msgs/Float64MultiArray` of joint velocities on
    /// `<controller>/commands`, tracking the runtime's position setpoints (their rate of change
    /// plus `velocity_gain` times the remaining error), within the URDF's velocity limits.
    /// Zeros on shutdown, and whenever the loop's commands stop for `command_timeout_s`: such
    /// a controller would otherwise keep its last velocity forever.
    ForwardVelocity,
}

/// Where tracked object poses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectsSource {
    /// No tracker: the observation's objects stay empty.
    None,
    /// `tf2_msgs/TFMessage` on a topic (`/tf`): transforms from `base_frame` to each of
    /// `object_frames`.
    Tf,
    /// `geometry_msgs/PoseArray` on a topic, in `base_frame`, one pose per object in
    /// `object_frames` order.
    PoseArray,
}

/// One camera: its topics and where it is mounted.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraParams {
    /// The camera's name (what reward sources ask for, e.g. `front`).
    pub name: String,
    /// `cameras.<name>.image_topic` (default `/<name>/color/image_raw`): `sensor_msgs/Image`,
    /// `rgb8` or `bgr8`.
    pub image_topic: String,
    /// `cameras.<name>.depth_topic` (default `/<name>/depth/image_rect_raw`; empty: none):
    /// `sensor_msgs/Image`, `16UC1` millimetres or `32FC1` metres, registered to the colour
    /// image (same size and intrinsics).
    pub depth_topic: String,
    /// `cameras.<name>.info_topic` (default `/<name>/color/camera_info`): `sensor_msgs/CameraInfo`.
    pub info_topic: String,
    /// `cameras.<name>.pose_in_base` (x, y, z, qx, qy, qz, qw): the optical frame (x right,
    /// y down, z forward) in the base frame, from the camera's calibration. Required of a camera
    /// a reward source looks through (keypoints are lifted through it); a camera that moves with
    /// the arm (a wrist camera) has none and serves only pixel policies, which need its colour
    /// alone: asking it for a posed frame is refused with this parameter's name.
    pub pose_in_base: Option<[f64; 7]>,
    /// `cameras.<name>.max_age_s` (s, default 0.5): an older image is refused as stale.
    pub max_age_s: f64,
}

/// The default of a list the URDF fills in (a placeholder that passes the count check).
const URDF_DEFAULT: [&str; ARM_DOF] = ["<urdf>"; ARM_DOF];

/// The bridge's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgeParams {
    /// `backend` (`rustdds` (default) or `r2r`, which needs the `r2r` feature).
    pub backend: Backend,
    /// `domain_id` (integer, default: the `ROS_DOMAIN_ID` variable, else 0).
    pub domain_id: u16,
    /// `localhost_only` (bool, default true): the DDS participant uses loopback only. A real
    /// arm on another machine needs `false`.
    pub localhost_only: bool,
    /// `urdf` (path, required): the arm's URDF; its joint limits bound every configured one.
    pub urdf: PathBuf,
    /// `base_link` (default `base_link`) and `tcp_link` (default `tcp`): the chain the safety
    /// filter's kinematics use.
    pub base_link: String,
    /// See `base_link`.
    pub tcp_link: String,
    /// `joint_names` (one per arm joint: 6 or 7 strings, default: the URDF's arm joints):
    /// matched by name in
    /// `/joint_states`; the command's order.
    pub joint_names: Option<Vec<String>>,
    /// `gripper_joint_names` (0 to 2 strings, default: the URDF's finger joints): the gripper
    /// width is the sum of their positions; each is commanded to width / count.
    pub gripper_joint_names: Option<Vec<String>>,
    /// `joint_states_topic` (default `/joint_states`).
    pub joint_states_topic: String,
    /// `command_interface` (`forward_position` (default), `joint_trajectory` or
    /// `forward_velocity`).
    pub command_interface: CommandInterface,
    /// `velocity_gain` (1/s, default 5; `forward_velocity` only): how fast the remaining
    /// position error is closed.
    pub velocity_gain: f64,
    /// `command_timeout_s` (s, default 0.1; `forward_velocity` only): zeros go out when the
    /// loop's commands stop for this long.
    pub command_timeout_s: f64,
    /// `arm_controller` (default `/forward_position_controller`,
    /// `/joint_trajectory_controller` or `/forward_velocity_controller`): the controller's
    /// namespace; commands go to `<arm_controller>/commands` or
    /// `<arm_controller>/joint_trajectory`.
    pub arm_controller: String,
    /// `gripper_controller` (default `/gripper_controller`; empty: no gripper commands): a
    /// forward position controller over `gripper_joint_names`.
    pub gripper_controller: String,
    /// `trajectory_lead_s` (s, default: two servo periods): when a trajectory point is to be
    /// reached.
    pub trajectory_lead_s: Option<f64>,
    /// `max_command_rate_hz` (Hz, default 0: every tick's command): publish at most this often
    /// (the newest command wins), for arms whose controller servos on its own at a lower
    /// stream rate.
    pub max_command_rate_hz: f64,
    /// `state_timeout_s` (s, default 0.05): a joint state older than this is stale; the loop
    /// holds, then brakes, exactly as in simulation.
    pub state_timeout_s: f64,
    /// `objects_source` (`none` (default), `tf`, `pose_array`).
    pub objects_source: ObjectsSource,
    /// `objects_topic` (default `/tf`, or `/objects` for a pose array).
    pub objects_topic: String,
    /// `object_frames` (strings, default: the task's object names): the tracked frames, in the
    /// task's object order.
    pub object_frames: Option<Vec<String>>,
    /// `base_frame` (default `base_link`): the frame object poses must be expressed in.
    pub base_frame: String,
    /// `success_topic` (default empty: none): a `std_msgs/Bool` that declares the episode a
    /// success (an operator's button, a detector). The simulated arm publishes its privileged
    /// ground truth on `/reflex_sim/privileged_success`, for evaluation only.
    pub success_topic: String,
    /// `reset_service` (default empty: none): a `std_srvs/Trigger` that resets the scene
    /// between episodes (the simulated arm's `/reflex_sim/reset`). Without it, an episode starts
    /// where the arm is.
    pub reset_service: String,
    /// `estop_topic` (default `/reflex/estop`): `std_msgs/Bool`, latched; true presses, false
    /// releases.
    pub estop_topic: String,
    /// `rearm_service` (default `/reflex/rearm`): `std_srvs/Trigger` re-arms a released e-stop.
    pub rearm_service: String,
    /// `intervention_twist_topic` (default `/reflex/intervention/twist`; empty: off): an
    /// operator's `geometry_msgs/TwistStamped` in the base frame, m/s and rad/s.
    pub intervention_twist_topic: String,
    /// `intervention_joy_topic` (default empty: off): an operator's `sensor_msgs/Joy`, mapped
    /// by `joy.axes` (6 axis indices for x, y, z, roll, pitch, yaw; -1 unused; default
    /// [0, 1, 2, 3, 4, 5]), `joy.scale` (default 1), `joy.close_button` (default 0),
    /// `joy.open_button` (default 1), `joy.deadman_button` (default -1: none; held, it takes
    /// over), `joy.success_button` and `joy.failure_button` (default -1: none; a press ends the
    /// episode with that label).
    pub intervention_joy_topic: String,
    /// See `intervention_joy_topic`.
    pub joy: crate::operator::JoyMap,
    /// `intervening_topic` (default `/reflex/intervening`; empty: off): `std_msgs/Bool`, whether
    /// the operator's action drove the last policy steps, published at 10 Hz.
    pub intervening_topic: String,
    /// `reward_topic` (default `/reflex/reward`; empty: off): `std_msgs/Float64MultiArray`,
    /// one message per judged policy step: `[step, reward, success, terminated, truncated,
    /// <term>...]`, the order named in `layout.dim[0].label` (`step,reward,success,...`); the
    /// reward is NaN while a reward worker has not answered.
    pub reward_topic: String,
    /// `diagnostics_period_s` (s, default 1.0; 0 turns `/diagnostics` off).
    pub diagnostics_period_s: f64,
    /// `cameras` (names, default none): the cameras reward sources may look at, each with its
    /// `cameras.<name>.*` parameters (see [`CameraParams`]).
    pub cameras: Vec<CameraParams>,
    /// `limits.joint_pos_min_rad`, `limits.joint_pos_max_rad`, `limits.joint_vel_max_rad_s`
    /// (one number per arm joint each, optional): tighter limits than the task's; the tighter
    /// value wins, and any value looser than the URDF's is refused at start.
    pub joint_pos_min_rad: Option<Vec<f64>>,
    /// See `joint_pos_min_rad`.
    pub joint_pos_max_rad: Option<Vec<f64>>,
    /// See `joint_pos_min_rad`.
    pub joint_vel_max_rad_s: Option<Vec<f64>>,
}

impl BridgeParams {
    /// Applies the command line's remap rules (`-r from:=to`) to every topic and service name
    /// the bridge uses, controller namespaces included.
    pub fn apply_remaps(&mut self, args: &crate::args::RosArgs) {
        let mut names: Vec<&mut String> = vec![
            &mut self.joint_states_topic,
            &mut self.arm_controller,
            &mut self.gripper_controller,
            &mut self.objects_topic,
            &mut self.success_topic,
            &mut self.reset_service,
            &mut self.estop_topic,
            &mut self.rearm_service,
            &mut self.intervention_twist_topic,
            &mut self.intervention_joy_topic,
            &mut self.intervening_topic,
            &mut self.reward_topic,
        ];
        for c in &mut self.cameras {
            names.extend([&mut c.image_topic, &mut c.depth_topic, &mut c.info_topic]);
        }
        for n in names {
            *n = args.remap(n).to_owned();
        }
    }

    /// Reads the bridge's parameters from `r`; `urdf` is required.
    pub fn read(r: &mut Reader) -> Result<Self, ParamError> {
        Self::read_inner(r, None)
    }

    /// Reads the bridge's parameters from `r`; `urdf` defaults to `default_urdf`.
    pub fn read_with_urdf(
        r: &mut Reader,
        default_urdf: &std::path::Path,
    ) -> Result<Self, ParamError> {
        Self::read_inner(r, Some(default_urdf))
    }

    fn read_inner(
        r: &mut Reader,
        default_urdf: Option<&std::path::Path>,
    ) -> Result<Self, ParamError> {
        let env_domain = std::env::var("ROS_DOMAIN_ID")
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(0);
        let command_interface = match r
            .choice(
                "command_interface",
                "forward_position",
                &["forward_position", "joint_trajectory", "forward_velocity"],
            )?
            .as_str()
        {
            "joint_trajectory" => CommandInterface::JointTrajectory,
            "forward_velocity" => CommandInterface::ForwardVelocity,
            _ => CommandInterface::ForwardPosition,
        };
        let default_controller = match command_interface {
            CommandInterface::ForwardPosition => "/forward_position_controller",
            CommandInterface::JointTrajectory => "/joint_trajectory_controller",
            CommandInterface::ForwardVelocity => "/forward_velocity_controller",
        };
        let objects_source = match r
            .choice("objects_source", "none", &["none", "tf", "pose_array"])?
            .as_str()
        {
            "tf" => ObjectsSource::Tf,
            "pose_array" => ObjectsSource::PoseArray,
            _ => ObjectsSource::None,
        };
        let default_objects_topic = match objects_source {
            ObjectsSource::PoseArray => "/objects",
            _ => "/tf",
        };
        let joint_names = r.strings_counted("joint_names", &URDF_DEFAULT, MIN_ARM_DOF, ARM_DOF)?;
        let joint_names = (joint_names != URDF_DEFAULT).then_some(joint_names);
        let gripper_joint_names =
            r.strings_counted("gripper_joint_names", &URDF_DEFAULT[..1], 0, 2)?;
        let gripper_joint_names =
            (gripper_joint_names != URDF_DEFAULT[..1]).then_some(gripper_joint_names);
        let object_frames = match r.strings("object_frames", &[])? {
            v if v.is_empty() => None,
            v => Some(v),
        };
        let lead = r.double("trajectory_lead_s", 0.0, 0.0, 10.0)?;
        let backend = match r
            .choice("backend", "rustdds", &["rustdds", "r2r"])?
            .as_str()
        {
            "r2r" => Backend::R2r,
            _ => Backend::Rustdds,
        };
        if backend == Backend::R2r && !cfg!(feature = "r2r") {
            let src = r.source("backend");
            return Err(Reader::invalid(
                "backend",
                src,
                "`r2r`: this build has no r2r backend (build with `--features r2r` where ROS 2 \
                 is sourced, or see scripts/test-r2r.sh)"
                    .into(),
            ));
        }
        Ok(Self {
            backend,
            domain_id: r.integer("domain_id", env_domain, 0, 232)? as u16,
            localhost_only: r.bool("localhost_only", true)?,
            urdf: match default_urdf {
                Some(d) => PathBuf::from(r.string("urdf", &d.display().to_string())?),
                None => PathBuf::from(r.required_string("urdf", "the arm's URDF file")?),
            },
            base_link: r.string("base_link", "base_link")?,
            tcp_link: r.string("tcp_link", "tcp")?,
            joint_names,
            gripper_joint_names,
            joint_states_topic: r.string("joint_states_topic", "/joint_states")?,
            command_interface,
            velocity_gain: r.double("velocity_gain", 5.0, 0.0, 100.0)?,
            command_timeout_s: r.double("command_timeout_s", 0.1, 0.005, 5.0)?,
            arm_controller: r.string("arm_controller", default_controller)?,
            gripper_controller: r.string("gripper_controller", "/gripper_controller")?,
            trajectory_lead_s: (lead > 0.0).then_some(lead),
            max_command_rate_hz: r.double("max_command_rate_hz", 0.0, 0.0, 100_000.0)?,
            state_timeout_s: r.double("state_timeout_s", 0.05, 1e-4, 10.0)?,
            objects_source,
            objects_topic: r.string("objects_topic", default_objects_topic)?,
            object_frames,
            base_frame: r.string("base_frame", "base_link")?,
            success_topic: r.string("success_topic", "")?,
            reset_service: r.string("reset_service", "")?,
            estop_topic: r.string("estop_topic", "/reflex/estop")?,
            rearm_service: r.string("rearm_service", "/reflex/rearm")?,
            intervention_twist_topic: r
                .string("intervention_twist_topic", "/reflex/intervention/twist")?,
            intervention_joy_topic: r.string("intervention_joy_topic", "")?,
            joy: {
                let axes = r.integers("joy.axes", &[0, 1, 2, 3, 4, 5])?;
                crate::operator::JoyMap {
                    axes: axes.clone().try_into().map_err(|_| ParamError::Invalid {
                        name: "joy.axes".into(),
                        from: r.source("joy.axes"),
                        message: format!("expected 6 axis indices, got {}", axes.len()),
                    })?,
                    scale: r.double("joy.scale", 1.0, -100.0, 100.0)?,
                    close_button: r.integer("joy.close_button", 0, -1, 255)?,
                    open_button: r.integer("joy.open_button", 1, -1, 255)?,
                    deadman_button: r.integer("joy.deadman_button", -1, -1, 255)?,
                    success_button: r.integer("joy.success_button", -1, -1, 255)?,
                    failure_button: r.integer("joy.failure_button", -1, -1, 255)?,
                }
            },
            intervening_topic: r.string("intervening_topic", "/reflex/intervening")?,
            reward_topic: r.string("reward_topic", "/reflex/reward")?,
            diagnostics_period_s: r.double("diagnostics_period_s", 1.0, 0.0, 3600.0)?,
            cameras: {
                let mut cams = Vec::new();
                for n in r.strings("cameras", &[])? {
                    let key = |k: &str| format!("cameras.{n}.{k}");
                    let pose = r.numbers::<7>(&key("pose_in_base"), "x, y, z, qx, qy, qz, qw")?;
                    cams.push(CameraParams {
                        image_topic: r
                            .string(&key("image_topic"), &format!("/{n}/color/image_raw"))?,
                        depth_topic: r
                            .string(&key("depth_topic"), &format!("/{n}/depth/image_rect_raw"))?,
                        info_topic: r
                            .string(&key("info_topic"), &format!("/{n}/color/camera_info"))?,
                        pose_in_base: pose,
                        max_age_s: r.double(&key("max_age_s"), 0.5, 0.001, 3600.0)?,
                        name: n,
                    });
                }
                cams
            },
            joint_pos_min_rad: r.joint_array("limits.joint_pos_min_rad")?,
            joint_pos_max_rad: r.joint_array("limits.joint_pos_max_rad")?,
            joint_vel_max_rad_s: r.joint_array("limits.joint_vel_max_rad_s")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::RosArgs;

    fn reader(args: &[&str]) -> Reader {
        Reader::new(RosArgs::parse(args).unwrap().parameters("/reflex").unwrap())
    }

    #[test]
    fn defaults_follow_ros2_control_conventions() {
        let mut r = reader(&["-p", "urdf:=urdf/reflex_arm.urdf"]);
        let p = BridgeParams::read(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(p.arm_controller, "/forward_position_controller");
        assert_eq!(p.joint_states_topic, "/joint_states");
        assert!(p.localhost_only);
        let mut r = reader(&[
            "-p",
            "urdf:=x.urdf",
            "-p",
            "command_interface:=joint_trajectory",
        ]);
        let p = BridgeParams::read(&mut r).unwrap();
        assert_eq!(p.arm_controller, "/joint_trajectory_controller");
    }

    #[test]
    fn every_example_parameter_file_reads_whole() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../launch/config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
                continue;
            }
            let args = RosArgs::parse(&["--params-file", path.to_str().unwrap()]).unwrap();
            let set = args.parameters("/reflex").unwrap();
            if set.values.is_empty() {
                // Another node's file (the success detector's is read by its own test).
                assert!(
                    path.ends_with("success_detector.yaml"),
                    "{path:?} has nothing for the `reflex` node"
                );
                continue;
            }
            let mut r = Reader::new(set);
            let p = BridgeParams::read(&mut r).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            r.finish().unwrap_or_else(|e| panic!("{path:?}: {e}"));
            assert!(!p.urdf.as_os_str().is_empty());
            n += 1;
        }
        assert!(n >= 2, "example parameter files in {dir:?}");
    }

    #[test]
    fn remaps_reach_every_topic() {
        let args = RosArgs::parse(&[
            "-p",
            "urdf:=x",
            "-r",
            "/reflex/estop:=/cell1/estop",
            "-r",
            "/forward_position_controller:=/arm/fpc",
        ])
        .unwrap();
        let mut r = Reader::new(args.parameters("/reflex").unwrap());
        let mut p = BridgeParams::read(&mut r).unwrap();
        p.apply_remaps(&args);
        assert_eq!(p.estop_topic, "/cell1/estop");
        assert_eq!(p.arm_controller, "/arm/fpc");
        assert_eq!(p.joint_states_topic, "/joint_states");
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = BridgeParams::read(&mut reader(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`urdf`"), "{e}");
        let e = BridgeParams::read(&mut reader(&["-p", "urdf:=x", "-p", "state_timeout_s:=-1"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("state_timeout_s") && e.contains("command line"),
            "{e}"
        );
        let e = BridgeParams::read(&mut reader(&["-p", "urdf:=x", "-p", "joint_names:=[a,b]"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("joint_names") && e.contains("got 2") && e.contains("command line"),
            "{e}"
        );
        let e = BridgeParams::read(&mut reader(&[
            "-p",
            "urdf:=x",
            "-p",
            "limits.joint_vel_max_rad_s:=[1,2]",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("limits.joint_vel_max_rad_s"), "{e}");
        let e = BridgeParams::read(&mut reader(&["-p", "urdf:=x", "-p", "backend:=rclrs"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`backend`") && e.contains("rustdds, r2r"), "{e}");
        let r2r = BridgeParams::read(&mut reader(&["-p", "urdf:=x", "-p", "backend:=r2r"]));
        if cfg!(feature = "r2r") {
            assert_eq!(r2r.unwrap().backend, Backend::R2r);
        } else {
            let e = r2r.unwrap_err().to_string();
            assert!(
                e.contains("`backend`") && e.contains("--features r2r"),
                "{e}"
            );
        }
        let mut r = reader(&["-p", "urdf:=x", "-p", "sevro_rate_hz:=3.0"]);
        BridgeParams::read(&mut r).unwrap();
        let e = r.finish().unwrap_err().to_string();
        assert!(e.contains("sevro_rate_hz"), "{e}");
    }
}
