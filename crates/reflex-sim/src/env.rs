//! The Gymnasium-style environment: `reset(seed)` and `step(action)` over a task.
//!
//! One `step` runs one policy period: the action sets the controller's goal, then
//! `physics_dt_s`-long physics steps run with the impedance controller updating the setpoint
//! before each. Same seed and same actions give the same trajectory bit for bit, because the
//! world is rebuilt at reset and every random draw comes from the seeded generator.
//!
//! A non-finite physics state (seen in our read-out, or reported by rapier, which disables such
//! bodies itself) ends the episode with [`Termination::NonFinite`] and the last finite
//! observation is returned instead, so a NaN never reaches a policy.

use crate::camera::{render, Camera, Frame};
use crate::error::SimError;
use crate::reward::TaskJudge;
use crate::rng::Rng;
use crate::task::Task;
use crate::world::{Placement, Template, World};
use nalgebra::{Point3, Vector3};
use reflex_core::{
    Action, ActionMapper, Frames, JointCommand, ObjectState, Observation, Outcome, Pose,
    RewardTerms, RobotState, ARM_DOF,
};
use std::path::Path;

/// Physics steps run at reset so contacts settle before the first observation.
const SETTLE_STEPS: usize = 25;

/// Why an episode ended before its time limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The success predicate held.
    Success,
    /// The physics state became non-finite; the observation is the last finite one.
    NonFinite,
    /// An object fell off the table (its index).
    ObjectLost(usize),
}

/// Facts about a step beyond reward and observation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepInfo {
    /// The success predicate holds now.
    pub success: bool,
    /// Why the episode ended early, if it did.
    pub termination: Option<Termination>,
    /// Non-finite action components replaced by zero in this step.
    pub non_finite_action: usize,
    /// Simulated time since reset, seconds.
    pub sim_time_s: f64,
}

/// What `step` returns.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Observation after the step.
    pub obs: Observation,
    /// Fused scalar reward.
    pub reward: f64,
    /// Raw reward terms, in task order (`reward/<name>`).
    pub terms: RewardTerms,
    /// The episode ended (success, failure or fault).
    pub terminated: bool,
    /// The episode hit its step limit.
    pub truncated: bool,
    /// Details.
    pub info: StepInfo,
}

/// A task environment.
pub struct Env {
    task: Task,
    template: Template,
    world: World,
    controller: ActionMapper,
    /// The joint command the motors track now.
    setpoint: JointCommand,
    rng: Rng,
    goals: Vec<[f64; 3]>,
    obs: Observation,
    steps: u32,
    sim_time_s: f64,
    frames: Frames,
    /// Stiffness and damping as arrays, cached from the task.
    stiffness: [f64; ARM_DOF],
    damping: [f64; ARM_DOF],
    feedforward: [f64; ARM_DOF],
    judge: TaskJudge,
    /// rapier reported a non-finite body or collider during this step (it disables and rolls
    /// back such bodies itself; for us the episode is over).
    physics_fault: bool,
}

/// The URDF the simulator uses unless told otherwise.
pub fn default_urdf_path() -> std::path::PathBuf {
    crate::task::repo_root().join("urdf/reflex_arm.urdf")
}

impl Env {
    /// An environment for `task` with the repository's arm. Call [`Env::reset`] before stepping.
    pub fn new(task: Task) -> Result<Self, SimError> {
        Self::with_urdf(task, &default_urdf_path())
    }

    /// An environment for `task` with the arm described by `urdf`.
    pub fn with_urdf(task: Task, urdf: &Path) -> Result<Self, SimError> {
        let template = Template::load(urdf, task.physics.finger_friction)?;
        Self::from_template(task, template)
    }

    /// An environment sharing an already-parsed arm (vectorised envs parse it once).
    pub fn from_template(task: Task, template: Template) -> Result<Self, SimError> {
        let judge = TaskJudge::new(&task);
        let placement = Placement::sample(&task, &mut Rng::new(0));
        let world = World::build(&template, &task, &placement)?;
        let controller = mapper_for(&task, &template.model, &placement.joint_pos_rad);
        Ok(Self {
            setpoint: controller.command(),
            stiffness: task.arm.stiffness_nm_rad,
            damping: task.arm.damping_nms_rad,
            feedforward: [0.0; ARM_DOF],
            goals: placement.goals.clone(),
            task,
            template,
            world,
            controller,
            rng: Rng::new(0),
            obs: Observation::default(),
            steps: 0,
            sim_time_s: 0.0,
            frames: Frames::default(),
            judge,
            physics_fault: false,
        })
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The physical world (for cameras, inspection and tests).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The physical world, mutable: for fault-injection tests and tools that edit a scene.
    /// Changes last until the next reset.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// Names of the reward terms, in the order of [`Step::terms`] (`reward/<name>` in logs).
    pub fn term_names(&self) -> impl Iterator<Item = &str> {
        self.task.reward.terms.iter().map(|t| t.name.as_str())
    }

    /// The arm's kinematic model.
    pub fn model(&self) -> &reflex_core::ArmModel {
        &self.template.model
    }

    /// The parsed arm, to build more environments without parsing the URDF again.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Goal positions sampled for this episode.
    pub fn goals(&self) -> &[[f64; 3]] {
        &self.goals
    }

    /// The latest observation.
    pub fn observation(&self) -> &Observation {
        &self.obs
    }

    /// The action mapper [`Env::step`] drives the arm with (setpoints), for diagnostics.
    pub fn controller(&self) -> &ActionMapper {
        &self.controller
    }

    /// The joint command the motors track now.
    pub fn setpoint(&self) -> &JointCommand {
        &self.setpoint
    }

    /// Starts a new episode; everything random in it comes from `seed`.
    pub fn reset(&mut self, seed: u64) -> Result<Observation, SimError> {
        self.rng = Rng::new(seed);
        let placement = Placement::sample(&self.task, &mut self.rng);
        self.world = World::build(&self.template, &self.task, &placement)?;
        self.goals.clone_from(&placement.goals);
        self.controller = mapper_for(&self.task, &self.template.model, &placement.joint_pos_rad);
        self.setpoint = self.controller.command();
        self.steps = 0;
        self.sim_time_s = 0.0;
        self.physics_fault = false;
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        for _ in 0..SETTLE_STEPS {
            self.world.read_joints(&mut q, &mut qd);
            self.physics_substep(&q, Drive::Mapper(1.0));
        }
        self.sim_time_s = 0.0;
        self.observe();
        self.judge.begin(&self.obs);
        Ok(self.obs)
    }

    /// Runs one policy step with `action` (components in [-1, 1]; non-finite ones count as 0).
    pub fn step(&mut self, action: &Action) -> Result<Step, SimError> {
        let expected = self.task.action_space.dim();
        if action.dim() != expected {
            return Err(SimError::ActionDim {
                got: action.dim(),
                expected,
            });
        }
        let mut a = *action;
        let non_finite_action = a.sanitize();
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        self.world.read_joints(&mut q, &mut qd);
        self.controller
            .set_action(&self.template.model, a.as_slice(), &q);
        let n = self.task.substeps();
        for s in 1..=n {
            self.world.read_joints(&mut q, &mut qd);
            self.physics_substep(&q, Drive::Mapper(s as f64 / n as f64));
        }
        Ok(self.conclude_step(&a, non_finite_action))
    }

    /// One physics step with the motors tracking `command` (gravity compensation added), for a
    /// controller outside the environment: the runtime's servo loop through `SimRobot`.
    /// Time advances by `physics_dt_s`; call [`Env::conclude`] at the end of each policy step.
    pub fn servo(&mut self, command: &JointCommand) {
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        self.world.read_joints(&mut q, &mut qd);
        self.physics_substep(&q, Drive::Command(command));
    }

    /// Ends a policy step driven through [`Env::servo`], in which `executed` was the action:
    /// observes, judges and counts the step exactly as [`Env::step`] does.
    pub fn conclude(&mut self, executed: &Action) -> Step {
        let mut a = *executed;
        let non_finite_action = a.sanitize();
        self.conclude_step(&a, non_finite_action)
    }

    /// Reads the arm as a robot driver would report it: measured joints, the torque the
    /// impedance controller produces, tool pose, gripper width and time. Returns false if a
    /// value is non-finite.
    pub fn read_robot_state(&self, r: &mut RobotState) -> bool {
        let model = &self.template.model;
        self.world
            .read_joints(&mut r.joint_pos_rad, &mut r.joint_vel_rad_s);
        for i in 0..ARM_DOF {
            // Torque the impedance controller is producing, within the effort limit.
            let tau = self.feedforward[i]
                + self.stiffness[i] * (self.setpoint.joint_pos_rad[i] - r.joint_pos_rad[i])
                - self.damping[i] * r.joint_vel_rad_s[i];
            let e = model.limits[i].effort;
            r.joint_torque_nm[i] = tau.clamp(-e, e);
        }
        let (fingers, _) = self.world.read_fingers();
        r.gripper_width_m = fingers[0] + fingers[1];
        r.tcp_pose = if r.joint_pos_rad.iter().all(|v| v.is_finite()) {
            Pose::from_isometry(&model.tcp_pose(&r.joint_pos_rad))
        } else {
            Pose {
                position_m: [f64::NAN; 3],
                quat_xyzw: [f64::NAN; 4],
            }
        };
        r.stamp_ns = (self.sim_time_s * 1e9) as u64;
        r.is_finite() && !self.physics_fault
    }

    /// Fills the scene part of `obs` (objects, keypoints, goals) from the world.
    pub fn read_scene(&self, o: &mut Observation) {
        o.num_objects = self.world.objects.len();
        for (i, &b) in self.world.objects.iter().enumerate() {
            let (p, q) = self.world.body_pose(b);
            o.objects[i] = ObjectState {
                pose: Pose {
                    position_m: p,
                    quat_xyzw: q,
                },
                lin_vel_m_s: self.world.body_linvel(b),
            };
        }
        o.num_keypoints = self.task.keypoints.len();
        for (i, k) in self.task.keypoints.iter().enumerate() {
            let obj = self.task.object(&k.object).unwrap_or(0);
            let p = o.objects[obj].pose.to_isometry() * Point3::from(k.offset_m);
            o.keypoints_m[i] = [p.x, p.y, p.z];
        }
        o.num_goals = self.goals.len();
        for (i, g) in self.goals.iter().enumerate() {
            o.goals_m[i] = *g;
        }
    }

    /// Simulated time since reset, seconds.
    pub fn sim_time_s(&self) -> f64 {
        self.sim_time_s
    }

    fn conclude_step(&mut self, a: &Action, non_finite_action: usize) -> Step {
        self.steps += 1;
        let previous = self.obs;
        let finite = self.observe() && !std::mem::take(&mut self.physics_fault);
        let mut info = StepInfo {
            non_finite_action,
            sim_time_s: self.sim_time_s,
            ..Default::default()
        };
        if !finite {
            self.obs = previous;
            self.obs.step = self.steps as u64;
            info.termination = Some(Termination::NonFinite);
            // A truncation, not a terminal state: the physics failed, not the task, so the
            // learner bootstraps from the last finite observation instead of learning that
            // this state is worth nothing.
            return Step {
                obs: self.obs,
                reward: 0.0,
                terms: RewardTerms::new(self.task.reward.terms.len()),
                terminated: false,
                truncated: true,
                info,
            };
        }
        let j = self.judge.judge(&self.obs, a);
        info.success = j.success;
        info.termination = if j.success && self.task.terminate_on_success {
            Some(Termination::Success)
        } else {
            j.lost.map(Termination::ObjectLost)
        };
        Step {
            obs: self.obs,
            reward: j.reward,
            terms: j.terms,
            terminated: info.termination.is_some(),
            truncated: info.termination.is_none() && self.steps >= self.task.episode_steps,
            info,
        }
    }

    /// One raw physics step with the motors as they are (for throughput measurements).
    pub fn physics_step_only(&mut self) {
        self.world.step();
    }

    /// Renders `camera` at the current state into `frame` (rows in parallel if `parallel`).
    pub fn render(&self, camera: &Camera, frame: &mut Frame, parallel: bool) {
        render(camera, &self.world, frame, parallel);
    }

    /// A hash of the exact bit patterns of the arm's joint state and every object's pose: equal
    /// hashes mean identical trajectories so far.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: f64| {
            for b in v.to_bits().to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        self.world.read_joints(&mut q, &mut qd);
        q.iter().chain(&qd).for_each(|v| mix(*v));
        let (fp, fv) = self.world.read_fingers();
        fp.iter().chain(&fv).for_each(|v| mix(*v));
        for &b in &self.world.objects {
            let (p, r) = self.world.body_pose(b);
            p.iter().chain(&r).for_each(|v| mix(*v));
        }
        h
    }

    /// Sets the motors (with gravity compensation) toward the mapper's or an outside setpoint
    /// and steps physics.
    fn physics_substep(&mut self, q_meas: &[f64; ARM_DOF], drive: Drive) {
        let dt = self.task.physics_dt_s;
        let model = &self.template.model;
        model.forward(q_meas, &mut self.frames);
        model.gravity_compensation(
            &self.frames,
            Vector3::new(0.0, 0.0, -9.81),
            &mut self.feedforward,
        );
        self.setpoint = match drive {
            Drive::Mapper(alpha) => {
                self.controller
                    .update(model, alpha, q_meas, &self.frames.tcp, dt);
                self.controller.command()
            }
            Drive::Command(c) => *c,
        };
        self.world.set_motor_targets(
            &self.setpoint.joint_pos_rad,
            &self.feedforward,
            &self.stiffness,
            &self.damping,
            self.setpoint.gripper_width_m,
        );
        self.world.step();
        self.physics_fault |= !self.world.physics.quarantine().is_empty();
        self.sim_time_s += dt;
    }

    /// Fills `self.obs` from the world. Returns false if anything is non-finite.
    fn observe(&mut self) -> bool {
        let mut o = self.obs;
        let robot_ok = self.read_robot_state(&mut o.robot);
        self.read_scene(&mut o);
        o.step = self.steps as u64;
        let flat_ok = o.rebuild_flat();
        self.obs = o;
        robot_ok && o.objects().iter().all(|ob| ob.pose.is_finite()) && flat_ok
    }
}

/// How a physics step sets the motor targets.
#[derive(Clone, Copy)]
enum Drive<'a> {
    /// The environment's own action mapper, `alpha` through the policy step.
    Mapper(f64),
    /// A command from outside.
    Command(&'a JointCommand),
}

/// The action mapper for a task, at rest at `q`.
fn mapper_for(task: &Task, model: &reflex_core::ArmModel, q: &[f64; ARM_DOF]) -> ActionMapper {
    ActionMapper::new(
        task.action_space,
        &task.control,
        task.control_rate_hz,
        &task.arm.initial_joint_pos_rad,
        model,
        q,
        task.arm.initial_gripper_width_m,
    )
}

impl From<&Step> for Outcome {
    fn from(s: &Step) -> Self {
        Outcome {
            reward: s.reward,
            terms: s.terms,
            success: s.info.success,
            terminated: s.terminated,
            truncated: s.truncated,
        }
    }
}

/// The cameras a simulated scene offers, by name.
pub const CAMERAS: [&str; 2] = ["front", "wrist"];

impl reflex_core::SceneView for Env {
    fn cameras(&self) -> Vec<String> {
        CAMERAS.iter().map(|c| (*c).to_owned()).collect()
    }

    fn render(&self, camera: &str, frame: &mut Frame) -> Result<(), reflex_core::SceneError> {
        let (w, h) = (frame.width, frame.height);
        let cam = match camera {
            "front" => Camera::front(w, h),
            "wrist" => Camera::wrist(w, h),
            _ => {
                return Err(reflex_core::SceneError::UnknownCamera {
                    camera: camera.to_owned(),
                    available: self.cameras(),
                })
            }
        };
        if w == 0 || h == 0 {
            return Err(reflex_core::SceneError::Failed {
                camera: camera.to_owned(),
                message: format!("cannot render a {w}x{h} frame"),
            });
        }
        Env::render(self, &cam, frame, false);
        frame.stamp_ns = (self.sim_time_s * 1e9) as u64;
        Ok(())
    }

    fn objects(&self, out: &mut Vec<reflex_core::TrackedObject>) {
        out.clear();
        for (spec, &body) in self.task.objects.iter().zip(&self.world.objects) {
            let (p, q) = self.world.body_pose(body);
            out.push(reflex_core::TrackedObject {
                name: spec.name.clone(),
                pose: Pose {
                    position_m: p,
                    quat_xyzw: q,
                }
                .to_isometry(),
                half_extents_m: spec.shape.half_extents_m(),
            });
        }
    }
}
