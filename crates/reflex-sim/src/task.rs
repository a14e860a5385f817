//! Task files (`sim/tasks/<name>.toml`): the scene, objects, keypoints, success predicate, reward
//! terms, episode length, control rate and randomisation of one manipulation task.
//!
//! Parsing is two-stage: serde (with `deny_unknown_fields`) checks the shape of the file, then
//! [`Task::validate`] checks meaning (positive sizes, ranges in order, names that resolve). Both
//! produce a [`SimError::Task`] naming the file and the field.

use crate::error::SimError;
pub use reflex_core::ControlSpec;
use reflex_core::{ActionSpace, ARM_DOF, MAX_GOALS, MAX_KEYPOINTS, MAX_OBJECTS};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A whole task file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Task name (used in run directories and logs).
    pub name: String,
    /// What the task asks for, in words (sent to a VLM by reward sources that use one).
    #[serde(default)]
    pub instruction: String,
    /// How actions are interpreted. Default `ee_delta`.
    #[serde(default)]
    pub action_space: ActionSpace,
    /// Policy (action) rate, Hz. Default 10.
    #[serde(default = "defaults::control_rate_hz")]
    pub control_rate_hz: f64,
    /// Physics and impedance-controller period, seconds. Default 0.002 (500 Hz).
    #[serde(default = "defaults::physics_dt_s")]
    pub physics_dt_s: f64,
    /// Policy steps before the episode is truncated.
    pub episode_steps: u32,
    /// End the episode (terminated) as soon as the success predicate holds. Default true.
    #[serde(default = "defaults::yes")]
    pub terminate_on_success: bool,
    /// Arm start pose and impedance gains.
    #[serde(default)]
    pub arm: ArmSpec,
    /// Action scaling and setpoint limits.
    #[serde(default)]
    pub control: ControlSpec,
    /// Physics engine settings.
    #[serde(default)]
    pub physics: PhysicsSpec,
    /// Objects in the scene, at most 4.
    #[serde(default)]
    pub objects: Vec<ObjectSpec>,
    /// Named points fixed to objects, at most 8.
    #[serde(default)]
    pub keypoints: Vec<KeypointSpec>,
    /// Named target points in the world, sampled at reset.
    #[serde(default)]
    pub goals: Vec<GoalSpec>,
    /// When the task counts as done.
    pub success: SuccessSpec,
    /// Reward terms and how they combine.
    pub reward: RewardSpec,
    /// Per-episode randomisation beyond object and goal placement.
    #[serde(default)]
    pub randomization: RandomizationSpec,
}

mod defaults {
    pub fn control_rate_hz() -> f64 {
        10.0
    }
    pub fn physics_dt_s() -> f64 {
        0.002
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn yes() -> bool {
        true
    }
}

/// Arm start pose and joint impedance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmSpec {
    /// Start joint positions, radians.
    pub initial_joint_pos_rad: [f64; ARM_DOF],
    /// Uniform noise added to each start joint position, radians. Default 0.02.
    pub initial_joint_noise_rad: f64,
    /// Joint stiffness, N m / rad.
    pub stiffness_nm_rad: [f64; ARM_DOF],
    /// Joint damping, N m s / rad.
    pub damping_nms_rad: [f64; ARM_DOF],
    /// Reflected rotor inertia per joint, kg m^2. Default 0.1.
    pub armature_kgm2: f64,
    /// Largest squeeze force of each finger, newtons. Default 40.
    pub gripper_force_n: f64,
    /// Gripper width at reset, metres. Default 0.08 (open).
    pub initial_gripper_width_m: f64,
}

impl Default for ArmSpec {
    fn default() -> Self {
        Self {
            initial_joint_pos_rad: [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785],
            initial_joint_noise_rad: 0.02,
            stiffness_nm_rad: [1200.0, 1200.0, 1200.0, 1200.0, 500.0, 500.0, 300.0],
            damping_nms_rad: [80.0, 80.0, 80.0, 80.0, 30.0, 30.0, 15.0],
            armature_kgm2: 0.1,
            gripper_force_n: 40.0,
            initial_gripper_width_m: 0.08,
        }
    }
}

/// Physics engine settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhysicsSpec {
    /// Typical object size, metres: rapier scales its tolerances by it. Default 0.1.
    pub length_unit_m: f64,
    /// Solver iterations (rapier substeps) per physics step. Default 1: at a 2 ms step the
    /// experts succeed as often as with 4, at three times the speed (see the README).
    pub solver_iterations: usize,
    /// Constraint-solver (PGS) iterations inside each substep. Default 1.
    pub pgs_iterations: usize,
    /// Friction of the table top. Default 0.8.
    pub table_friction: f64,
    /// Friction of the finger pads. Default 1.2.
    pub finger_friction: f64,
}

impl Default for PhysicsSpec {
    fn default() -> Self {
        Self {
            length_unit_m: 0.1,
            solver_iterations: 1,
            pgs_iterations: 1,
            table_friction: 0.8,
            finger_friction: 1.2,
        }
    }
}

/// Shape of an object.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShapeSpec {
    /// A box with full side lengths `size_m`.
    Box {
        /// Full side lengths x, y, z, metres.
        size_m: [f64; 3],
    },
    /// An upright cylinder.
    Cylinder {
        /// Radius, metres.
        radius_m: f64,
        /// Height, metres.
        height_m: f64,
    },
    /// A sphere.
    Sphere {
        /// Radius, metres.
        radius_m: f64,
    },
    /// A block with a square blind hole from the top, for insertion tasks.
    HoleBlock {
        /// Full outer side lengths x, y, z, metres.
        outer_m: [f64; 3],
        /// Side length of the square hole, metres.
        hole_m: f64,
        /// Depth of the hole from the top face, metres.
        depth_m: f64,
    },
}

impl ShapeSpec {
    /// Height of the shape's lowest point below its origin, metres (to rest it on the table).
    pub fn half_height_m(&self) -> f64 {
        match self {
            ShapeSpec::Box { size_m } => size_m[2] / 2.0,
            ShapeSpec::Cylinder { height_m, .. } => height_m / 2.0,
            ShapeSpec::Sphere { radius_m } => *radius_m,
            ShapeSpec::HoleBlock { outer_m, .. } => outer_m[2] / 2.0,
        }
    }

    /// Half side lengths of the shape's bounding box in its own frame, metres.
    pub fn half_extents_m(&self) -> [f64; 3] {
        match self {
            ShapeSpec::Box { size_m }
            | ShapeSpec::HoleBlock {
                outer_m: size_m, ..
            } => size_m.map(|v| v / 2.0),
            ShapeSpec::Cylinder { radius_m, height_m } => [*radius_m, *radius_m, height_m / 2.0],
            ShapeSpec::Sphere { radius_m } => [*radius_m; 3],
        }
    }

    /// Radius of a vertical cylinder that contains the shape, metres (for placement spacing).
    pub fn footprint_radius_m(&self) -> f64 {
        match self {
            ShapeSpec::Box { size_m } => 0.5 * (size_m[0].hypot(size_m[1])),
            ShapeSpec::Cylinder { radius_m, .. } | ShapeSpec::Sphere { radius_m } => *radius_m,
            ShapeSpec::HoleBlock { outer_m, .. } => 0.5 * (outer_m[0].hypot(outer_m[1])),
        }
    }
}

/// One object in the scene.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    /// Name keypoints and predicates refer to.
    pub name: String,
    /// Geometry.
    pub shape: ShapeSpec,
    /// Mass, kilograms (ignored for fixed objects).
    #[serde(default = "defaults::one")]
    pub mass_kg: f64,
    /// Friction coefficient. Default 1.
    #[serde(default = "defaults::one")]
    pub friction: f64,
    /// Colour in camera images, linear RGB in [0, 1].
    #[serde(default = "ObjectSpec::default_color")]
    pub color_rgb: [f64; 3],
    /// Fixed to the table (fixtures) instead of free.
    #[serde(default)]
    pub fixed: bool,
    /// Lower corner of the x, y placement range, metres.
    pub position_min_m: [f64; 2],
    /// Upper corner of the x, y placement range, metres.
    pub position_max_m: [f64; 2],
    /// Height of the object's origin above the table; default rests it on the table.
    #[serde(default)]
    pub z_m: Option<f64>,
    /// Yaw range, radians. Default [0, 0].
    #[serde(default)]
    pub yaw_range_rad: [f64; 2],
}

impl ObjectSpec {
    fn default_color() -> [f64; 3] {
        [0.8, 0.25, 0.2]
    }
}

/// A named point fixed to an object.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypointSpec {
    /// Name reward terms and predicates refer to.
    pub name: String,
    /// The object it is attached to.
    pub object: String,
    /// Position in the object frame, metres.
    #[serde(default)]
    pub offset_m: [f64; 3],
}

/// A named target point in the world, sampled uniformly in a box at reset.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalSpec {
    /// Name reward terms and predicates refer to.
    pub name: String,
    /// Lower corner of the sampling box, metres.
    pub position_min_m: [f64; 3],
    /// Upper corner of the sampling box, metres.
    pub position_max_m: [f64; 3],
    /// Keep at least this far (x, y) from every object's sampled position, metres. Default 0.
    #[serde(default)]
    pub min_distance_from_objects_m: f64,
}

/// When an episode counts as a success. Points are `tcp`, a keypoint name or a goal name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SuccessSpec {
    /// Point `a` within `tolerance_m` of point `b` (horizontal distance only if `xy_only`).
    Near {
        /// First point.
        a: String,
        /// Second point.
        b: String,
        /// Distance threshold, metres.
        tolerance_m: f64,
        /// Ignore the vertical component.
        #[serde(default)]
        xy_only: bool,
    },
    /// Object raised by `height_m` above where it started, held between the fingers.
    Lifted {
        /// The object.
        object: String,
        /// Required rise, metres.
        height_m: f64,
    },
    /// Point `peg` horizontally within `lateral_tolerance_m` of `hole` and at least `depth_m`
    /// below it.
    Inserted {
        /// Keypoint at the bottom of the peg.
        peg: String,
        /// Keypoint at the centre of the hole's opening.
        hole: String,
        /// Required depth below the opening, metres.
        depth_m: f64,
        /// Horizontal tolerance, metres.
        lateral_tolerance_m: f64,
    },
}

/// One reward term; every term is reported as `reward/<name>`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(from = "RawTerm")]
pub struct RewardTermSpec {
    /// Term name.
    pub name: String,
    /// Weight in the total. Default 1.
    pub weight: f64,
    /// What the term measures.
    pub kind: RewardKind,
}

/// What a reward term measures.
#[derive(Clone, Debug, PartialEq)]
pub enum RewardKind {
    /// 1 when the success predicate holds, else 0 (sparse).
    Success,
    /// `1 - tanh(d / scale_m)` for the distance `d` between two points.
    Distance {
        /// First point.
        from: String,
        /// Second point.
        to: String,
        /// Distance scale, metres.
        scale_m: f64,
        /// Ignore the vertical component.
        xy_only: bool,
    },
    /// Rise of an object over its start height, divided by `height_m` and clipped to [0, 1].
    Lift {
        /// The object.
        object: String,
        /// Rise that earns the full term, metres.
        height_m: f64,
    },
    /// Minus the mean squared action component (smoothness).
    ActionL2,
}

/// The file form of a term: flat keys, tagged by `kind`, unknown keys refused.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawTerm {
    Success {
        name: String,
        #[serde(default = "defaults::one")]
        weight: f64,
    },
    Distance {
        name: String,
        #[serde(default = "defaults::one")]
        weight: f64,
        from: String,
        to: String,
        scale_m: f64,
        #[serde(default)]
        xy_only: bool,
    },
    Lift {
        name: String,
        #[serde(default = "defaults::one")]
        weight: f64,
        object: String,
        height_m: f64,
    },
    ActionL2 {
        name: String,
        #[serde(default = "defaults::one")]
        weight: f64,
    },
}

impl From<RawTerm> for RewardTermSpec {
    fn from(raw: RawTerm) -> Self {
        let (name, weight, kind) = match raw {
            RawTerm::Success { name, weight } => (name, weight, RewardKind::Success),
            RawTerm::Distance {
                name,
                weight,
                from,
                to,
                scale_m,
                xy_only,
            } => (
                name,
                weight,
                RewardKind::Distance {
                    from,
                    to,
                    scale_m,
                    xy_only,
                },
            ),
            RawTerm::Lift {
                name,
                weight,
                object,
                height_m,
            } => (name, weight, RewardKind::Lift { object, height_m }),
            RawTerm::ActionL2 { name, weight } => (name, weight, RewardKind::ActionL2),
        };
        Self { name, weight, kind }
    }
}

/// How terms combine into the scalar reward (the one rule, from core).
pub use reflex_core::FusionRule as Fusion;

/// Reward terms and their fusion.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    /// How terms combine.
    #[serde(default)]
    pub fusion: Fusion,
    /// The terms.
    pub terms: Vec<RewardTermSpec>,
}

/// Randomisation applied at every reset.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomizationSpec {
    /// Range of the factor applied to every object's friction.
    pub friction_scale: [f64; 2],
    /// Range of the factor applied to every free object's mass.
    pub mass_scale: [f64; 2],
    /// Minimum horizontal spacing between object surfaces, metres.
    pub min_object_gap_m: f64,
}

impl Default for RandomizationSpec {
    fn default() -> Self {
        Self {
            friction_scale: [1.0, 1.0],
            mass_scale: [1.0, 1.0],
            min_object_gap_m: 0.02,
        }
    }
}

/// Where a named point lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointRef {
    /// The tool centre point.
    Tcp,
    /// Keypoint index.
    Keypoint(usize),
    /// Goal index.
    Goal(usize),
}

/// How far the safety filter's workspace box reaches past the task's control workspace, metres.
/// The Cartesian reference is clamped to the control workspace, but the tool tracks it with an
/// impedance lag and presses into contacts (a peg into its hole, fingers onto the table).
pub const SAFETY_BOX_MARGIN_M: f64 = 0.03;

impl Task {
    /// Loads and validates `sim/tasks/<name>.toml` style files.
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates task text; `path` is used in error messages only.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, SimError> {
        let task: Task = toml::from_str(text).map_err(|e| SimError::Task {
            path: path.to_owned(),
            field: e
                .span()
                .map(|s| field_at(text, s.start))
                .unwrap_or_else(|| "<file>".into()),
            message: e.message().trim().to_owned(),
        })?;
        task.validate(path)?;
        Ok(task)
    }

    /// Loads a built-in task by name from the repository's `sim/tasks/` directory, or a file path.
    pub fn load(name_or_path: &str) -> Result<Self, SimError> {
        let p = Path::new(name_or_path);
        // A file, not any path: a directory that happens to share a task's name (a run
        // directory called `push`, say) must not hide the task.
        if p.extension().is_some_and(|e| e == "toml") || p.is_file() {
            return Self::from_file(p);
        }
        Self::from_file(&tasks_dir().join(format!("{name_or_path}.toml")))
    }

    /// Resolves a point name (`tcp`, a keypoint or a goal).
    pub fn point(&self, name: &str) -> Option<PointRef> {
        if name == "tcp" {
            return Some(PointRef::Tcp);
        }
        if let Some(i) = self.keypoints.iter().position(|k| k.name == name) {
            return Some(PointRef::Keypoint(i));
        }
        self.goals
            .iter()
            .position(|g| g.name == name)
            .map(PointRef::Goal)
    }

    /// Index of an object by name.
    pub fn object(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.name == name)
    }

    /// The safety limits a control loop running this task enforces: the arm's limits (from
    /// its model) with the tool workspace box set to the task's control workspace widened by
    /// [`SAFETY_BOX_MARGIN_M`] on every side, so the filter stops the tool just past where the
    /// task ever sends it, and never in the way of the task itself.
    pub fn safety_limits(&self, model: &reflex_core::ArmModel) -> reflex_core::SafetyLimits {
        let mut limits = reflex_core::SafetyLimits::from_model(model);
        for k in 0..3 {
            limits.workspace_min_m[k] = self.control.workspace_min_m[k] - SAFETY_BOX_MARGIN_M;
            limits.workspace_max_m[k] = self.control.workspace_max_m[k] + SAFETY_BOX_MARGIN_M;
        }
        limits
    }

    /// Physics steps per policy step.
    pub fn substeps(&self) -> usize {
        (1.0 / (self.control_rate_hz * self.physics_dt_s))
            .round()
            .max(1.0) as usize
    }

    fn validate(&self, path: &Path) -> Result<(), SimError> {
        let fail = |field: String, message: String| {
            Err(SimError::Task {
                path: path.to_owned(),
                field,
                message,
            })
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.control_rate_hz) || self.control_rate_hz > 2000.0 {
            return fail(
                "control_rate_hz".into(),
                format!(
                    "expected a rate in (0, 2000] Hz, got {}",
                    self.control_rate_hz
                ),
            );
        }
        if !positive(self.physics_dt_s) || self.physics_dt_s > 0.01 {
            return fail(
                "physics_dt_s".into(),
                format!(
                    "expected a period in (0, 0.01] s, got {}",
                    self.physics_dt_s
                ),
            );
        }
        let ratio = 1.0 / (self.control_rate_hz * self.physics_dt_s);
        if ratio < 1.0 - 1e-9 || (ratio - ratio.round()).abs() > 1e-6 {
            return fail(
                "control_rate_hz".into(),
                format!(
                    "the policy period must be a whole number of physics steps ({} s); got {} Hz",
                    self.physics_dt_s, self.control_rate_hz
                ),
            );
        }
        if self.episode_steps == 0 {
            return fail("episode_steps".into(), "expected at least 1".into());
        }
        let a = &self.arm;
        for i in 0..ARM_DOF {
            if !a.initial_joint_pos_rad[i].is_finite() {
                return fail(
                    format!("arm.initial_joint_pos_rad[{i}]"),
                    "must be finite".into(),
                );
            }
            if !positive(a.stiffness_nm_rad[i]) {
                return fail(
                    format!("arm.stiffness_nm_rad[{i}]"),
                    "must be positive".into(),
                );
            }
            if !(a.damping_nms_rad[i] >= 0.0) {
                return fail(
                    format!("arm.damping_nms_rad[{i}]"),
                    "must be zero or positive".into(),
                );
            }
        }
        if !(a.initial_joint_noise_rad >= 0.0 && a.initial_joint_noise_rad < 0.5) {
            return fail(
                "arm.initial_joint_noise_rad".into(),
                "expected a value in [0, 0.5)".into(),
            );
        }
        if !(a.armature_kgm2 >= 0.0) {
            return fail(
                "arm.armature_kgm2".into(),
                "must be zero or positive".into(),
            );
        }
        if !positive(a.gripper_force_n) {
            return fail("arm.gripper_force_n".into(), "must be positive".into());
        }
        if !(a.initial_gripper_width_m >= 0.0 && a.initial_gripper_width_m <= 0.08) {
            return fail(
                "arm.initial_gripper_width_m".into(),
                "expected a width in [0, 0.08] m".into(),
            );
        }
        let c = &self.control;
        for (name, v) in [
            ("control.max_linear_speed_m_s", c.max_linear_speed_m_s),
            ("control.max_angular_speed_rad_s", c.max_angular_speed_rad_s),
            ("control.max_joint_speed_rad_s", c.max_joint_speed_rad_s),
            ("control.max_setpoint_lead_rad", c.max_setpoint_lead_rad),
            ("control.max_setpoint_lead_m", c.max_setpoint_lead_m),
            ("control.dls_damping", c.dls_damping),
        ] {
            if !positive(v) {
                return fail(name.into(), format!("must be positive, got {v}"));
            }
        }
        if !(c.null_space_gain >= 0.0) {
            return fail(
                "control.null_space_gain".into(),
                "must be zero or positive".into(),
            );
        }
        for k in 0..3 {
            if !(c.workspace_min_m[k] < c.workspace_max_m[k]) {
                return fail(
                    format!("control.workspace_min_m[{k}]"),
                    "must be below control.workspace_max_m".into(),
                );
            }
        }
        let p = &self.physics;
        if !positive(p.length_unit_m) {
            return fail("physics.length_unit_m".into(), "must be positive".into());
        }
        if !(1..=50).contains(&p.solver_iterations) {
            return fail("physics.solver_iterations".into(), "expected 1..=50".into());
        }
        if !(1..=50).contains(&p.pgs_iterations) {
            return fail("physics.pgs_iterations".into(), "expected 1..=50".into());
        }
        if self.objects.len() > MAX_OBJECTS {
            return fail(
                "objects".into(),
                format!("at most {MAX_OBJECTS} objects are supported"),
            );
        }
        if self.goals.len() > MAX_GOALS {
            return fail(
                "goals".into(),
                format!("at most {MAX_GOALS} goals are supported"),
            );
        }
        if self.keypoints.len() > MAX_KEYPOINTS {
            return fail(
                "keypoints".into(),
                format!("at most {MAX_KEYPOINTS} keypoints are supported"),
            );
        }
        let mut names: Vec<&str> = vec!["tcp"];
        for (i, o) in self.objects.iter().enumerate() {
            let f = |s: &str| format!("objects[{i}] ({}).{s}", o.name);
            if o.name.is_empty() || self.objects[..i].iter().any(|p| p.name == o.name) {
                return fail(
                    format!("objects[{i}].name"),
                    "must be non-empty and unique".into(),
                );
            }
            let shape_ok = match &o.shape {
                ShapeSpec::Box { size_m } => size_m.iter().all(|v| positive(*v)),
                ShapeSpec::Cylinder { radius_m, height_m } => {
                    positive(*radius_m) && positive(*height_m)
                }
                ShapeSpec::Sphere { radius_m } => positive(*radius_m),
                ShapeSpec::HoleBlock {
                    outer_m,
                    hole_m,
                    depth_m,
                } => {
                    outer_m.iter().all(|v| positive(*v))
                        && positive(*hole_m)
                        && positive(*depth_m)
                        && *hole_m < outer_m[0].min(outer_m[1])
                        && *depth_m < outer_m[2]
                }
            };
            if !shape_ok {
                return fail(
                    f("shape"),
                    "sizes must be positive (and a hole smaller than its block)".into(),
                );
            }
            if !o.fixed && !positive(o.mass_kg) {
                return fail(f("mass_kg"), format!("must be positive, got {}", o.mass_kg));
            }
            if !(o.friction >= 0.0 && o.friction.is_finite()) {
                return fail(f("friction"), "must be zero or positive".into());
            }
            if !o.color_rgb.iter().all(|c| (0.0..=1.0).contains(c)) {
                return fail(f("color_rgb"), "components must be in [0, 1]".into());
            }
            for k in 0..2 {
                if !(o.position_min_m[k] <= o.position_max_m[k]) {
                    return fail(f("position_min_m"), "must not exceed position_max_m".into());
                }
            }
            if !(o.yaw_range_rad[0] <= o.yaw_range_rad[1]) {
                return fail(
                    f("yaw_range_rad"),
                    "expected [min, max] with min <= max".into(),
                );
            }
        }
        for (i, k) in self.keypoints.iter().enumerate() {
            if names.contains(&k.name.as_str()) || k.name.is_empty() {
                return fail(
                    format!("keypoints[{i}].name"),
                    format!("\"{}\" is empty or already used", k.name),
                );
            }
            names.push(&k.name);
            if self.object(&k.object).is_none() {
                return fail(
                    format!("keypoints[{i}].object"),
                    format!("no object named \"{}\"", k.object),
                );
            }
        }
        for (i, g) in self.goals.iter().enumerate() {
            if names.contains(&g.name.as_str()) || g.name.is_empty() {
                return fail(
                    format!("goals[{i}].name"),
                    format!("\"{}\" is empty or already used", g.name),
                );
            }
            names.push(&g.name);
            for k in 0..3 {
                if !(g.position_min_m[k] <= g.position_max_m[k]) {
                    return fail(
                        format!("goals[{i}].position_min_m"),
                        "must not exceed position_max_m".into(),
                    );
                }
            }
        }
        let point = |field: &str, name: &str| -> Result<(), SimError> {
            if self.point(name).is_none() {
                return Err(SimError::Task {
                    path: path.to_owned(),
                    field: field.to_owned(),
                    message: format!("\"{name}\" is not tcp, a keypoint or a goal"),
                });
            }
            Ok(())
        };
        let object = |field: &str, name: &str| -> Result<(), SimError> {
            if self.object(name).is_none() {
                return Err(SimError::Task {
                    path: path.to_owned(),
                    field: field.to_owned(),
                    message: format!("no object named \"{name}\""),
                });
            }
            Ok(())
        };
        match &self.success {
            SuccessSpec::Near {
                a, b, tolerance_m, ..
            } => {
                point("success.a", a)?;
                point("success.b", b)?;
                if !positive(*tolerance_m) {
                    return fail("success.tolerance_m".into(), "must be positive".into());
                }
            }
            SuccessSpec::Lifted {
                object: o,
                height_m,
            } => {
                object("success.object", o)?;
                if !positive(*height_m) {
                    return fail("success.height_m".into(), "must be positive".into());
                }
            }
            SuccessSpec::Inserted {
                peg,
                hole,
                depth_m,
                lateral_tolerance_m,
            } => {
                point("success.peg", peg)?;
                point("success.hole", hole)?;
                if !positive(*depth_m) || !positive(*lateral_tolerance_m) {
                    return fail(
                        "success.depth_m".into(),
                        "depth_m and lateral_tolerance_m must be positive".into(),
                    );
                }
            }
        }
        if self.reward.terms.is_empty() {
            return fail("reward.terms".into(), "declare at least one term".into());
        }
        if self.reward.terms.len() > reflex_core::MAX_REWARD_TERMS {
            return fail(
                "reward.terms".into(),
                format!(
                    "at most {} terms are supported",
                    reflex_core::MAX_REWARD_TERMS
                ),
            );
        }
        for (i, t) in self.reward.terms.iter().enumerate() {
            let f = |s: &str| format!("reward.terms[{i}] ({}).{s}", t.name);
            if t.name.is_empty() || self.reward.terms[..i].iter().any(|u| u.name == t.name) {
                return fail(
                    format!("reward.terms[{i}].name"),
                    "must be non-empty and unique".into(),
                );
            }
            if !t.weight.is_finite() {
                return fail(f("weight"), "must be finite".into());
            }
            match &t.kind {
                RewardKind::Distance {
                    from, to, scale_m, ..
                } => {
                    point(&f("from"), from)?;
                    point(&f("to"), to)?;
                    if !positive(*scale_m) {
                        return fail(f("scale_m"), "must be positive".into());
                    }
                }
                RewardKind::Lift {
                    object: o,
                    height_m,
                } => {
                    object(&f("object"), o)?;
                    if !positive(*height_m) {
                        return fail(f("height_m"), "must be positive".into());
                    }
                }
                RewardKind::Success | RewardKind::ActionL2 => {}
            }
        }
        let r = &self.randomization;
        for (name, [lo, hi]) in [
            ("randomization.friction_scale", r.friction_scale),
            ("randomization.mass_scale", r.mass_scale),
        ] {
            if !(positive(lo) && lo <= hi && hi.is_finite()) {
                return fail(
                    name.into(),
                    format!("expected [min, max] with 0 < min <= max, got [{lo}, {hi}]"),
                );
            }
        }
        if !(r.min_object_gap_m >= 0.0) {
            return fail(
                "randomization.min_object_gap_m".into(),
                "must be zero or positive".into(),
            );
        }
        Ok(())
    }
}

/// The repository's `sim/tasks` directory.
pub fn tasks_dir() -> PathBuf {
    repo_root().join("sim/tasks")
}

/// The repository root (where `urdf/` and `sim/` live): the working directory if it has them,
/// else the source checkout this crate was built from.
pub fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("sim/tasks").is_dir() && cwd.join("urdf").is_dir() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Names the TOML key (with its table path) whose text starts at byte `offset`.
fn field_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    // The innermost table header above the line.
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_owned());
    let key = line.split('=').next().unwrap_or("").trim();
    match (table, key.is_empty() || key.starts_with('[')) {
        (Some(t), false) => format!("{t}.{key} (line {line_no})"),
        (None, false) => format!("{key} (line {line_no})"),
        (Some(t), true) => format!("[{t}] (line {line_no})"),
        (None, true) => format!("line {line_no}"),
    }
}
