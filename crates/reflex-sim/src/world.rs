//! Building a rapier world from the URDF and a task, and the arm's physical interface: joint
//! read-out, joint impedance motors with gravity compensation, and setting a configuration.
//!
//! A world is rebuilt from a parsed template at every reset, so no contact cache or island state
//! survives from one episode to the next: the same seed gives the same episode, whatever ran
//! before it.

use crate::error::SimError;
use crate::rng::Rng;
use crate::task::{ShapeSpec, Task};
use rapier3d::prelude::*;
use rapier3d_urdf::{UrdfLoaderOptions, UrdfMultibodyOptions, UrdfRobot};
use reflex_core::{ArmModel, ARM_DOF};
use std::path::{Path, PathBuf};

/// Segmentation id of pixels that hit nothing.
pub const SEG_NONE: u16 = 0;
/// Segmentation id of the table.
pub const SEG_TABLE: u16 = 1;

/// Generalised-coordinate index of a revolute joint's angle (rapier stores angular DoFs after
/// the three linear ones).
const ANG_X: usize = 3;
/// Generalised-coordinate index of a prismatic joint's displacement.
const LIN_X: usize = 0;

/// Everything parsed once and reused at each reset.
#[derive(Clone)]
pub struct Template {
    /// Path of the URDF (for error messages).
    pub urdf_path: PathBuf,
    robot: UrdfRobot,
    /// URDF link name of each entry of `robot.links`.
    link_names: Vec<String>,
    /// URDF joint name of each entry of `robot.joints`.
    joint_names: Vec<String>,
    /// The kinematic model the controllers use.
    pub model: ArmModel,
}

impl Template {
    /// Loads the URDF at `path`; the arm runs from `link0` to `tcp`.
    pub fn load(path: &Path, finger_friction: f64) -> Result<Self, SimError> {
        let model = ArmModel::from_urdf_file(path, "link0", "tcp")?;
        if model.dof != ARM_DOF {
            return Err(SimError::Urdf {
                path: path.to_owned(),
                message: format!(
                    "the simulator needs a {ARM_DOF}-joint arm, this one has {} (6-DoF arms run \
                     through the ROS 2 bridge)",
                    model.dof
                ),
            });
        }
        if model.gripper.is_none() {
            return Err(SimError::Urdf {
                path: path.to_owned(),
                message: "the arm needs two prismatic finger joints under the hand".into(),
            });
        }
        let options = UrdfLoaderOptions {
            make_roots_fixed: true,
            collider_blueprint: ColliderBuilder::default()
                .density(0.0)
                .friction(finger_friction as f32),
            rigid_body_blueprint: RigidBodyBuilder::dynamic().can_sleep(false),
            ..Default::default()
        };
        let (mut robot, urdf) =
            UrdfRobot::from_file(path, options, None).map_err(|e| SimError::Urdf {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        // Link cylinders are simulated as capsules of the same radius and overall length: the
        // usual collision proxy for arm links, with closed-form contact and ray tests where
        // rapier's cylinder needs iterative (GJK) ones.
        for link in &mut robot.links {
            for c in &mut link.colliders {
                let capsule = c.collider.shape().as_cylinder().and_then(|cyl| {
                    let half_segment = cyl.half_height - cyl.radius;
                    (half_segment > 0.0).then(|| SharedShape::capsule_y(half_segment, cyl.radius))
                });
                if let Some(shape) = capsule {
                    c.collider.set_shape(shape);
                }
            }
        }
        let link_names = robot
            .links
            .iter()
            .map(|l| urdf.links[l.urdf_link_index].name.clone())
            .collect();
        let joint_names = robot
            .joints
            .iter()
            .map(|j| urdf.joints[j.urdf_joint_index].name.clone())
            .collect();
        Ok(Self {
            urdf_path: path.to_owned(),
            robot,
            link_names,
            joint_names,
            model,
        })
    }
}

/// What one segmentation id is.
#[derive(Clone, Debug)]
pub struct SegEntry {
    /// Body name: `table`, a URDF link name, or a task object name.
    pub name: String,
    /// Base colour, linear RGB.
    pub color_rgb: [f32; 3],
}

/// Sampled per-episode placement and physical parameters of the objects.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Object poses (x, y, z, yaw).
    pub objects: Vec<[f64; 4]>,
    /// Goal positions.
    pub goals: Vec<[f64; 3]>,
    /// Factor applied to object friction.
    pub friction_scale: f64,
    /// Factor applied to object mass.
    pub mass_scale: f64,
    /// Start joint positions.
    pub joint_pos_rad: [f64; ARM_DOF],
}

impl Placement {
    /// Samples a placement for `task` from `rng`, keeping objects and goals apart.
    pub fn sample(task: &Task, rng: &mut Rng) -> Self {
        let r = &task.randomization;
        let mut objects: Vec<[f64; 4]> = Vec::with_capacity(task.objects.len());
        for (i, o) in task.objects.iter().enumerate() {
            let mut pose = [0.0; 4];
            // Rejection sampling, bounded; the last try is kept if nothing fits.
            for _ in 0..200 {
                let x = rng.uniform(o.position_min_m[0], o.position_max_m[0]);
                let y = rng.uniform(o.position_min_m[1], o.position_max_m[1]);
                let yaw = rng.uniform(o.yaw_range_rad[0], o.yaw_range_rad[1]);
                let z = o.z_m.unwrap_or(o.shape.half_height_m());
                pose = [x, y, z, yaw];
                let clear = objects.iter().zip(&task.objects[..i]).all(|(p, q)| {
                    let d = (p[0] - x).hypot(p[1] - y);
                    d > o.shape.footprint_radius_m()
                        + q.shape.footprint_radius_m()
                        + r.min_object_gap_m
                });
                if clear {
                    break;
                }
            }
            objects.push(pose);
        }
        let mut goals = Vec::with_capacity(task.goals.len());
        for g in &task.goals {
            let mut p = [0.0; 3];
            for _ in 0..200 {
                for (k, v) in p.iter_mut().enumerate() {
                    *v = rng.uniform(g.position_min_m[k], g.position_max_m[k]);
                }
                let clear = objects.iter().zip(&task.objects).all(|(o, spec)| {
                    (o[0] - p[0]).hypot(o[1] - p[1])
                        >= g.min_distance_from_objects_m + spec.shape.footprint_radius_m()
                });
                if clear {
                    break;
                }
            }
            goals.push(p);
        }
        let friction_scale = rng.uniform(r.friction_scale[0], r.friction_scale[1]);
        let mass_scale = rng.uniform(r.mass_scale[0], r.mass_scale[1]);
        let mut joint_pos_rad = task.arm.initial_joint_pos_rad;
        for q in &mut joint_pos_rad {
            *q += rng.uniform(-1.0, 1.0) * task.arm.initial_joint_noise_rad;
        }
        Self {
            objects,
            goals,
            friction_scale,
            mass_scale,
            joint_pos_rad,
        }
    }
}

/// Handles into a built world.
pub struct World {
    /// Unique per built world (cameras key cached images on it).
    pub id: u64,
    /// The rapier world.
    pub physics: PhysicsWorld,
    /// Any joint of the arm's multibody (used to look the multibody up).
    arm_handle: MultibodyJointHandle,
    /// Multibody link ids of the 7 arm joints' child links.
    arm_links: [usize; ARM_DOF],
    /// Multibody link ids of the two fingers.
    finger_links: [usize; 2],
    /// The arm joints' effort limits (their motors' force caps), N m.
    arm_effort_nm: [f32; ARM_DOF],
    /// The hand body (wrist camera mount).
    pub hand_body: RigidBodyHandle,
    /// Task object bodies, in task order.
    pub objects: Vec<RigidBodyHandle>,
    /// Segmentation table: index = id stored in each collider's user data.
    pub seg: Vec<SegEntry>,
    /// Images of the fixed bodies that world-mounted cameras reuse.
    pub render_cache: crate::camera::RenderCache,
}

fn link_color(name: &str) -> [f32; 3] {
    match name {
        "left_finger" | "right_finger" => [0.15, 0.15, 0.17],
        "hand" => [0.85, 0.85, 0.88],
        _ => [0.93, 0.93, 0.93],
    }
}

impl World {
    /// Builds the world for `task` with objects and the arm placed as `placement` says.
    pub fn build(
        template: &Template,
        task: &Task,
        placement: &Placement,
    ) -> Result<Self, SimError> {
        // URDF and the task files are z-up; rapier's default gravity is -y.
        let mut physics = PhysicsWorld {
            gravity: Vector::new(0.0, 0.0, -9.81),
            ..Default::default()
        };
        let ip = &mut physics.integration_parameters;
        ip.dt = task.physics_dt_s as f32;
        ip.length_unit = task.physics.length_unit_m as f32;
        ip.num_solver_iterations = task.physics.solver_iterations;
        ip.num_internal_pgs_iterations = task.physics.pgs_iterations;

        let mut seg = vec![
            SegEntry {
                name: "none".into(),
                color_rgb: [0.0; 3],
            },
            SegEntry {
                name: "table".into(),
                color_rgb: [0.55, 0.42, 0.30],
            },
        ];

        // Table: top surface at z = 0, the arm's base at the origin.
        let table = physics.insert_body(RigidBodyBuilder::fixed());
        physics.insert_collider(
            ColliderBuilder::cuboid(0.55, 0.8, 0.025)
                .translation(Vector::new(0.45, 0.0, -0.025))
                .friction(task.physics.table_friction as f32)
                .user_data(SEG_TABLE as u128),
            Some(table),
        );

        // The arm.
        let mut robot = template.robot.clone();
        for (link, name) in robot.links.iter_mut().zip(&template.link_names) {
            let id = seg.len() as u16;
            seg.push(SegEntry {
                name: name.clone(),
                color_rgb: link_color(name),
            });
            for c in &mut link.colliders {
                c.collider.user_data = id as u128;
            }
        }
        let handles = robot.insert_using_multibody_joints(
            &mut physics.bodies,
            &mut physics.colliders,
            &mut physics.multibody_joints,
            UrdfMultibodyOptions::DISABLE_SELF_CONTACTS,
        );
        let find_joint = |name: &str| -> Result<MultibodyJointHandle, SimError> {
            template
                .joint_names
                .iter()
                .zip(&handles.joints)
                .find(|(n, _)| n.as_str() == name)
                .and_then(|(_, h)| h.joint)
                .ok_or_else(|| SimError::Urdf {
                    path: template.urdf_path.clone(),
                    message: format!("joint \"{name}\" did not become a multibody joint"),
                })
        };
        let model = &template.model;
        let mut arm_links = [0usize; ARM_DOF];
        let mut arm_handle = None;
        for (i, name) in model.joint_names.iter().enumerate() {
            let h = find_joint(name)?;
            arm_handle.get_or_insert(h);
            arm_links[i] = physics
                .multibody_joints
                .get(h)
                .map(|(_, link)| link)
                .ok_or_else(|| SimError::Urdf {
                    path: template.urdf_path.clone(),
                    message: format!("joint \"{name}\" has no multibody link"),
                })?;
        }
        let gripper = model.gripper.as_ref().ok_or_else(|| SimError::Urdf {
            path: template.urdf_path.clone(),
            message: "no gripper".into(),
        })?;
        let mut finger_links = [0usize; 2];
        for (k, name) in gripper.finger_joints.iter().enumerate() {
            let h = find_joint(name)?;
            finger_links[k] = physics
                .multibody_joints
                .get(h)
                .map(|(_, link)| link)
                .unwrap_or_default();
        }
        let arm_handle = arm_handle.unwrap_or_else(|| unreachable!("ARM_DOF > 0"));
        let hand_body = template
            .link_names
            .iter()
            .position(|n| n == "hand")
            .map(|i| handles.links[i].body)
            .ok_or_else(|| SimError::Urdf {
                path: template.urdf_path.clone(),
                message: "no link named \"hand\"".into(),
            })?;

        // Objects.
        let mut objects = Vec::with_capacity(task.objects.len());
        for (spec, pose) in task.objects.iter().zip(&placement.objects) {
            let id = seg.len() as u16;
            seg.push(SegEntry {
                name: spec.name.clone(),
                color_rgb: spec.color_rgb.map(|c| c as f32),
            });
            let body = if spec.fixed {
                RigidBodyBuilder::fixed()
            } else {
                RigidBodyBuilder::dynamic().can_sleep(false)
            }
            .pose(Pose::from_parts(
                Vector::new(pose[0] as f32, pose[1] as f32, pose[2] as f32),
                Rotation::from_rotation_z(pose[3] as f32),
            ));
            let h = physics.insert_body(body);
            let friction = (spec.friction * placement.friction_scale) as f32;
            let parts = collider_parts(&spec.shape);
            let volume: f32 = parts
                .iter()
                .map(|(_, s)| s.mass_properties(1.0).mass())
                .sum();
            let density = if spec.fixed || volume <= 0.0 {
                0.0
            } else {
                (spec.mass_kg * placement.mass_scale) as f32 / volume
            };
            for (local, shape) in parts {
                physics.insert_collider(
                    ColliderBuilder::new(shape)
                        .position(local)
                        .friction(friction)
                        .density(density)
                        .user_data(id as u128),
                    Some(h),
                );
            }
            objects.push(h);
        }

        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut world = Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            physics,
            arm_handle,
            arm_links,
            finger_links,
            arm_effort_nm: [0.0; ARM_DOF],
            hand_body,
            objects,
            seg,
            render_cache: Default::default(),
        };
        world.configure_motors(task, model);
        world.set_configuration(&placement.joint_pos_rad, task.arm.initial_gripper_width_m);
        Ok(world)
    }

    fn multibody_mut(&mut self) -> &mut Multibody {
        self.physics
            .multibody_joints
            .get_mut(self.arm_handle)
            .map(|(mb, _)| mb)
            .unwrap_or_else(|| unreachable!("the arm multibody lives as long as the world"))
    }

    fn multibody(&self) -> &Multibody {
        self.physics
            .multibody_joints
            .get(self.arm_handle)
            .map(|(mb, _)| mb)
            .unwrap_or_else(|| unreachable!("the arm multibody lives as long as the world"))
    }

    fn configure_motors(&mut self, task: &Task, model: &ArmModel) {
        let arm_links = self.arm_links;
        let finger_links = self.finger_links;
        let armature = task.arm.armature_kgm2 as f32;
        let force = task.arm.gripper_force_n as f32;
        self.arm_effort_nm = std::array::from_fn(|i| model.limits[i].effort as f32);
        let mb = self.multibody_mut();
        for (i, &l) in arm_links.iter().enumerate() {
            let Some(link) = mb.link_mut(l) else { continue };
            let data = &mut link.joint.data;
            data.set_motor_model(JointAxis::AngX, MotorModel::ForceBased);
            data.set_motor_max_force(JointAxis::AngX, model.limits[i].effort as f32);
            let dof = link.assembly_id();
            mb.armature_mut()[dof] = armature;
        }
        for &l in &finger_links {
            let Some(link) = mb.link_mut(l) else { continue };
            let data = &mut link.joint.data;
            data.set_motor_model(JointAxis::LinX, MotorModel::ForceBased);
            data.set_motor_max_force(JointAxis::LinX, force);
            let dof = link.assembly_id();
            mb.armature_mut()[dof] = 0.05;
        }
    }

    /// Teleports the arm to joint positions `q` and finger width `width_m`, at rest.
    pub fn set_configuration(&mut self, q: &[f64; ARM_DOF], width_m: f64) {
        let arm_links = self.arm_links;
        let finger_links = self.finger_links;
        let mb = self
            .physics
            .multibody_joints
            .get_mut(self.arm_handle)
            .map(|(mb, _)| mb)
            .unwrap_or_else(|| unreachable!("the arm multibody lives as long as the world"));
        let mut disp = vec![0.0f32; mb.ndofs()];
        for (i, &l) in arm_links.iter().enumerate() {
            if let Some(link) = mb.link(l) {
                disp[link.assembly_id()] = q[i] as f32 - link.joint().coords()[ANG_X];
            }
        }
        for &l in &finger_links {
            if let Some(link) = mb.link(l) {
                disp[link.assembly_id()] = (width_m / 2.0) as f32 - link.joint().coords()[LIN_X];
            }
        }
        mb.apply_displacements(&disp);
        mb.generalized_velocity_mut().fill(0.0);
        mb.forward_kinematics(&self.physics.bodies, false);
        mb.update_rigid_bodies(&mut self.physics.bodies, true);
    }

    /// Measured joint positions (rad) and velocities (rad/s).
    pub fn read_joints(&self, q: &mut [f64; ARM_DOF], qd: &mut [f64; ARM_DOF]) {
        let mb = self.multibody();
        let vel = mb.generalized_velocity();
        for (i, &l) in self.arm_links.iter().enumerate() {
            if let Some(link) = mb.link(l) {
                q[i] = link.joint().coords()[ANG_X] as f64;
                qd[i] = vel[link.assembly_id()] as f64;
            }
        }
    }

    /// Measured finger positions (m) and velocities (m/s).
    pub fn read_fingers(&self) -> ([f64; 2], [f64; 2]) {
        let mb = self.multibody();
        let vel = mb.generalized_velocity();
        let mut p = [0.0; 2];
        let mut v = [0.0; 2];
        for (k, &l) in self.finger_links.iter().enumerate() {
            if let Some(link) = mb.link(l) {
                p[k] = link.joint().coords()[LIN_X] as f64;
                v[k] = vel[link.assembly_id()] as f64;
            }
        }
        (p, v)
    }

    /// Sets the joint impedance motors: each arm joint is pulled to `target_rad` with stiffness
    /// `k` and damping `d`, the target shifted by `feedforward_nm / k` so the motor also delivers
    /// the feed-forward torque (gravity compensation). Fingers go to half of `width_m` each.
    pub fn set_motor_targets(
        &mut self,
        target_rad: &[f64; ARM_DOF],
        feedforward_nm: &[f64; ARM_DOF],
        k: &[f64; ARM_DOF],
        d: &[f64; ARM_DOF],
        width_m: f64,
    ) {
        let arm_links = self.arm_links;
        let effort = self.arm_effort_nm;
        let mb = self.multibody_mut();
        for (i, &l) in arm_links.iter().enumerate() {
            if let Some(link) = mb.link_mut(l) {
                let target = target_rad[i] + feedforward_nm[i] / k[i];
                link.joint
                    .data
                    .set_motor_max_force(JointAxis::AngX, effort[i]);
                link.joint.data.set_motor_position(
                    JointAxis::AngX,
                    target as f32,
                    k[i] as f32,
                    d[i] as f32,
                );
            }
        }
        self.set_gripper_target(width_m);
    }

    /// Drives the arm joints with explicit torques, N m, for this step (a joint board's motors
    /// in place of the impedance motors): each joint's torque acts between its child link and
    /// its parent about the joint axis, as a motor in the joint would. The joint motors are
    /// switched off. Call before every [`World::step`]; the torques replace the last ones.
    pub fn apply_joint_torques(&mut self, torque_nm: &[f64; ARM_DOF]) {
        let arm_links = self.arm_links;
        let mb = self.multibody_mut();
        for &l in &arm_links {
            if let Some(link) = mb.link_mut(l) {
                // A motor without stiffness and damping is a rigid velocity constraint in
                // rapier: its force cap at zero is what switches it off.
                link.joint.data.set_motor_max_force(JointAxis::AngX, 0.0);
            }
        }
        // Each link's body, its parent's body and the joint axis in the world.
        let mut pairs = [(None, None, Vector::ZERO); ARM_DOF];
        let mb = self.multibody();
        for (i, &l) in arm_links.iter().enumerate() {
            let Some(link) = mb.link(l) else { continue };
            let parent = link
                .parent_id()
                .and_then(|p| mb.link(p))
                .map(|p| p.rigid_body_handle());
            let axis = link.local_to_world().rotation * link.joint().data.local_axis2();
            pairs[i] = (Some(link.rigid_body_handle()), parent, axis);
        }
        for (child, parent, _) in &pairs {
            for h in [child, parent].into_iter().flatten() {
                if let Some(rb) = self.physics.bodies.get_mut(*h) {
                    rb.reset_torques(false);
                }
            }
        }
        for (i, (child, parent, axis)) in pairs.iter().enumerate() {
            let t = *axis * torque_nm[i] as f32;
            if let Some(rb) = child.and_then(|h| self.physics.bodies.get_mut(h)) {
                rb.add_torque(t, false);
            }
            if let Some(rb) = parent.and_then(|h| self.physics.bodies.get_mut(h)) {
                rb.add_torque(-t, false);
            }
        }
    }

    /// Holds every arm joint at `q_rad` as a brake would (a stiff, damped, effort-limited
    /// motor), the explicit torques cleared: a joint board's motors without power.
    pub fn brake_joints(&mut self, q_rad: &[f64; ARM_DOF]) {
        self.apply_joint_torques(&[0.0; ARM_DOF]);
        let arm_links = self.arm_links;
        let effort = self.arm_effort_nm;
        let mb = self.multibody_mut();
        for (i, &l) in arm_links.iter().enumerate() {
            if let Some(link) = mb.link_mut(l) {
                link.joint
                    .data
                    .set_motor_max_force(JointAxis::AngX, effort[i]);
                link.joint.data.set_motor_position(
                    JointAxis::AngX,
                    q_rad[i] as f32,
                    BRAKE_STIFFNESS_NM_RAD,
                    BRAKE_DAMPING_NMS_RAD,
                );
            }
        }
    }

    /// Sends the fingers to half of `width_m` each (force-limited, as in
    /// [`World::set_motor_targets`]).
    pub fn set_gripper_target(&mut self, width_m: f64) {
        let finger_links = self.finger_links;
        let mb = self.multibody_mut();
        for &l in &finger_links {
            if let Some(link) = mb.link_mut(l) {
                link.joint.data.set_motor_position(
                    JointAxis::LinX,
                    (width_m / 2.0) as f32,
                    FINGER_STIFFNESS_N_M,
                    FINGER_DAMPING_NS_M,
                );
            }
        }
    }

    /// Pose of a body (object or link) as position and quaternion `[x, y, z, w]`.
    pub fn body_pose(&self, h: RigidBodyHandle) -> ([f64; 3], [f64; 4]) {
        let Some(rb) = self.physics.bodies.get(h) else {
            return ([f64::NAN; 3], [f64::NAN; 4]);
        };
        let p = rb.translation();
        let r = rb.rotation();
        (
            [p.x as f64, p.y as f64, p.z as f64],
            [r.x as f64, r.y as f64, r.z as f64, r.w as f64],
        )
    }

    /// Linear velocity of a body, m/s.
    pub fn body_linvel(&self, h: RigidBodyHandle) -> [f64; 3] {
        self.physics
            .bodies
            .get(h)
            .map(|rb| {
                let v = rb.linvel();
                [v.x as f64, v.y as f64, v.z as f64]
            })
            .unwrap_or([f64::NAN; 3])
    }

    /// Advances physics by one step.
    pub fn step(&mut self) {
        self.physics.step();
    }
}

/// A braked joint's stiffness, N m/rad, and damping, N m s/rad (capped by the joint's effort).
const BRAKE_STIFFNESS_NM_RAD: f32 = 20_000.0;
const BRAKE_DAMPING_NMS_RAD: f32 = 400.0;

/// Finger position-motor stiffness, N/m: with the force cap this makes a force-limited squeeze.
const FINGER_STIFFNESS_N_M: f32 = 2000.0;
/// Finger motor damping, N s/m.
const FINGER_DAMPING_NS_M: f32 = 40.0;

/// Collider shapes (with local poses) for an object shape.
fn collider_parts(shape: &ShapeSpec) -> Vec<(Pose, SharedShape)> {
    let f = |v: f64| v as f32;
    match *shape {
        ShapeSpec::Box { size_m } => vec![(
            Pose::IDENTITY,
            SharedShape::cuboid(f(size_m[0] / 2.0), f(size_m[1] / 2.0), f(size_m[2] / 2.0)),
        )],
        ShapeSpec::Cylinder { radius_m, height_m } => vec![(
            // rapier cylinders run along y; stand it up along z.
            Pose::from_rotation(Rotation::from_rotation_x(std::f32::consts::FRAC_PI_2)),
            SharedShape::cylinder(f(height_m / 2.0), f(radius_m)),
        )],
        ShapeSpec::Sphere { radius_m } => vec![(Pose::IDENTITY, SharedShape::ball(f(radius_m)))],
        ShapeSpec::HoleBlock {
            outer_m,
            hole_m,
            depth_m,
        } => {
            let [ox, oy, oz] = outer_m.map(|v| v / 2.0);
            let h = hole_m / 2.0;
            let wall_z = oz - depth_m / 2.0;
            let mut parts = vec![(
                // Floor under the hole.
                Pose::from_translation(Vector::new(0.0, 0.0, f(-depth_m / 2.0))),
                SharedShape::cuboid(f(ox), f(oy), f(oz - depth_m / 2.0)),
            )];
            let side_y = (oy - h) / 2.0;
            for s in [-1.0, 1.0] {
                // Walls in front of and behind the hole, full length in x.
                parts.push((
                    Pose::from_translation(Vector::new(0.0, f(s * (h + side_y)), f(wall_z))),
                    SharedShape::cuboid(f(ox), f(side_y), f(depth_m / 2.0)),
                ));
            }
            let side_x = (ox - h) / 2.0;
            for s in [-1.0, 1.0] {
                // Walls left and right of the hole, between the other two.
                parts.push((
                    Pose::from_translation(Vector::new(f(s * (h + side_x)), 0.0, f(wall_z))),
                    SharedShape::cuboid(f(side_x), f(h), f(depth_m / 2.0)),
                ));
            }
            parts
        }
    }
}
