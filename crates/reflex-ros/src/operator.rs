//! An operator's ROS 2 input as the runtime's [`OperatorCommand`]s: `geometry_msgs/TwistStamped`
//! (a SpaceMouse node, a teleop node) and `sensor_msgs/Joy` (a gamepad or SpaceMouse node's
//! axes and buttons), both mapped to normalised end-effector actions: a component of 1 is the
//! task's top tool speed (`max_linear_speed_m_s`, `max_angular_speed_rad_s`). The gripper is
//! whatever the operator last asked for (open until a close button is pressed).
//!
//! Who acts is the runtime's takeover rule: a twist has no intervene control, so it takes over
//! by magnitude (above the intervention threshold, and a moment after); a joystick with a
//! dead-man button takes over while it is held and hands back when it is released (without
//! one, by magnitude). Success and failure buttons end the episode with that label (counted
//! on each press). Silence past the link timeout holds the arm.
//!
//! Joint-space tasks take no Cartesian operator input: their messages are refused and counted.
//! Pure, so tests cover it without DDS.

use crate::msg::{Joy, TwistStamped};
use reflex_core::{Action, ActionSpace, OperatorCommand, OperatorEvents, Takeover};

/// How `sensor_msgs/Joy` maps to an action.
#[derive(Clone, Debug, PartialEq)]
pub struct JoyMap {
    /// Axis index for each of x, y, z, roll, pitch, yaw (-1: not used). Default 0..5, the
    /// spacenav node's `spacenav/joy` layout.
    pub axes: [i64; 6],
    /// Multiplies every axis (-1 .. 1 on most devices) before clamping. Default 1.
    pub scale: f64,
    /// Button that closes the gripper (-1: none). Default 0.
    pub close_button: i64,
    /// Button that opens the gripper (-1: none). Default 1.
    pub open_button: i64,
    /// Button that must be held for the axes to count, and that takes over while held (-1:
    /// none, the magnitude decides; a gamepad's RB, say). Default -1.
    pub deadman_button: i64,
    /// Button that ends the episode as a success (-1: none). Default -1.
    pub success_button: i64,
    /// Button that ends the episode as a failure (-1: none). Default -1.
    pub failure_button: i64,
}

impl Default for JoyMap {
    fn default() -> Self {
        Self {
            axes: [0, 1, 2, 3, 4, 5],
            scale: 1.0,
            close_button: 0,
            open_button: 1,
            deadman_button: -1,
            success_button: -1,
            failure_button: -1,
        }
    }
}

/// Why an operator message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorRefused {
    /// The task's actions are not end-effector deltas.
    NotCartesian,
    /// A non-finite value.
    NonFinite,
    /// A twist in a frame other than the base frame (no tf lookup is done).
    WrongFrame(String),
    /// A Joy message with fewer axes or buttons than mapped.
    MissingAxis(usize),
}

/// Turns operator messages into actions.
#[derive(Clone, Debug)]
pub struct OperatorMapper {
    space: ActionSpace,
    max_linear_m_s: f64,
    max_angular_rad_s: f64,
    base_frame: String,
    joy: JoyMap,
    gripper: f32,
    events: OperatorEvents,
    /// The success and failure buttons were down in the last Joy message (presses count on
    /// the way down).
    was_down: [bool; 2],
}

impl OperatorMapper {
    /// For a task with action `space` and these top tool speeds; twists must be in
    /// `base_frame` (or carry no frame).
    pub fn new(
        space: ActionSpace,
        max_linear_m_s: f64,
        max_angular_rad_s: f64,
        base_frame: &str,
        joy: JoyMap,
    ) -> Self {
        Self {
            space,
            max_linear_m_s,
            max_angular_rad_s,
            base_frame: base_frame.to_owned(),
            joy,
            gripper: 1.0,
            events: OperatorEvents::default(),
            was_down: [false; 2],
        }
    }

    fn action(&self, v: [f64; 6]) -> Result<Action, OperatorRefused> {
        if self.space != ActionSpace::EeDelta {
            return Err(OperatorRefused::NotCartesian);
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(OperatorRefused::NonFinite);
        }
        let mut a = Action::zeros(self.space);
        let s = a.as_mut_slice();
        for k in 0..6 {
            let top = if k < 3 {
                self.max_linear_m_s
            } else {
                self.max_angular_rad_s
            };
            s[k] = (v[k] / top).clamp(-1.0, 1.0) as f32;
        }
        s[6] = self.gripper;
        Ok(a)
    }

    /// A twist (m/s, rad/s in the base frame) as a command that takes over by magnitude.
    pub fn twist(&mut self, msg: &TwistStamped) -> Result<OperatorCommand, OperatorRefused> {
        let frame = msg.header.frame_id.trim_start_matches('/');
        if !frame.is_empty() && frame != self.base_frame {
            return Err(OperatorRefused::WrongFrame(frame.to_owned()));
        }
        let (l, r) = (msg.twist.linear, msg.twist.angular);
        Ok(OperatorCommand {
            action: self.action([l.x, l.y, l.z, r.x, r.y, r.z])?,
            takeover: Takeover::ByMagnitude,
            events: self.events,
            received: Some(std::time::Instant::now()),
        })
    }

    /// A Joy message as a command: axes scaled so that 1 is the top speed, buttons for the
    /// gripper and the episode's label; with a dead-man button, the operator acts while it is
    /// held (and a released one means zero motion), without one the magnitude decides.
    pub fn joy(&mut self, msg: &Joy) -> Result<OperatorCommand, OperatorRefused> {
        let button = |b: i64| -> Result<bool, OperatorRefused> {
            if b < 0 {
                return Ok(false);
            }
            msg.buttons
                .get(b as usize)
                .map(|&v| v != 0)
                .ok_or(OperatorRefused::MissingAxis(b as usize))
        };
        if button(self.joy.close_button)? {
            self.gripper = -1.0;
        }
        if button(self.joy.open_button)? {
            self.gripper = 1.0;
        }
        let down = [
            button(self.joy.success_button)?,
            button(self.joy.failure_button)?,
        ];
        if down[0] && !self.was_down[0] {
            self.events.success += 1;
        }
        if down[1] && !self.was_down[1] {
            self.events.failure += 1;
        }
        self.was_down = down;
        let live = self.joy.deadman_button < 0 || button(self.joy.deadman_button)?;
        let takeover = match (self.joy.deadman_button < 0, live) {
            (true, _) => Takeover::ByMagnitude,
            (false, true) => Takeover::Held,
            (false, false) => Takeover::Released,
        };
        let mut v = [0.0; 6];
        for (k, &ax) in self.joy.axes.iter().enumerate() {
            if ax < 0 {
                continue;
            }
            let value = *msg
                .axes
                .get(ax as usize)
                .ok_or(OperatorRefused::MissingAxis(ax as usize))? as f64;
            let top = if k < 3 {
                self.max_linear_m_s
            } else {
                self.max_angular_rad_s
            };
            v[k] = if live {
                value * self.joy.scale * top
            } else {
                0.0
            };
        }
        Ok(OperatorCommand {
            action: self.action(v)?,
            takeover,
            events: self.events,
            received: Some(std::time::Instant::now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Header, Twist, Vector3};

    fn mapper() -> OperatorMapper {
        OperatorMapper::new(ActionSpace::EeDelta, 0.5, 1.5, "link0", JoyMap::default())
    }

    #[test]
    fn a_twist_is_scaled_by_the_top_speeds_and_clamped() {
        let mut m = mapper();
        let msg = TwistStamped {
            header: Header {
                frame_id: "link0".into(),
                ..Default::default()
            },
            twist: Twist {
                linear: Vector3 {
                    x: 0.25,
                    y: -1.0,
                    z: 0.0,
                },
                angular: Vector3 {
                    x: 0.0,
                    y: 0.0,
                    z: 0.75,
                },
            },
        };
        let c = m.twist(&msg).unwrap();
        assert_eq!(c.action.as_slice(), &[0.5, -1.0, 0.0, 0.0, 0.0, 0.5, 1.0]);
        assert_eq!(
            c.takeover,
            Takeover::ByMagnitude,
            "a twist has no intervene control"
        );
        let mut wrong = msg.clone();
        wrong.header.frame_id = "camera".into();
        assert_eq!(
            m.twist(&wrong).unwrap_err(),
            OperatorRefused::WrongFrame("camera".into())
        );
        let mut nan = msg;
        nan.twist.linear.x = f64::NAN;
        assert_eq!(m.twist(&nan).unwrap_err(), OperatorRefused::NonFinite);
        let mut joint = OperatorMapper::new(
            ActionSpace::JointDelta,
            0.5,
            1.5,
            "link0",
            JoyMap::default(),
        );
        assert_eq!(
            joint.twist(&TwistStamped::default()).unwrap_err(),
            OperatorRefused::NotCartesian
        );
    }

    #[test]
    fn joy_buttons_latch_the_gripper_and_the_dead_man_takes_over_while_held() {
        let mut m = OperatorMapper::new(
            ActionSpace::EeDelta,
            0.5,
            1.5,
            "link0",
            JoyMap {
                deadman_button: 2,
                success_button: 3,
                failure_button: 4,
                ..Default::default()
            },
        );
        let mut joy = Joy {
            axes: vec![0.5, 0.0, -1.0, 0.0, 0.0, 0.0],
            buttons: vec![1, 0, 0, 0, 0],
            ..Default::default()
        };
        let c = m.joy(&joy).unwrap();
        assert_eq!(
            c.action.as_slice(),
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            "dead man released"
        );
        assert_eq!(c.takeover, Takeover::Released);
        joy.buttons = vec![0, 0, 1, 0, 0];
        let c = m.joy(&joy).unwrap();
        assert_eq!(
            c.action.as_slice(),
            &[0.5, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0],
            "still closed"
        );
        assert_eq!(c.takeover, Takeover::Held);
        // Success counts once per press, however many messages the button stays down for.
        joy.buttons = vec![0, 0, 1, 1, 0];
        assert_eq!(m.joy(&joy).unwrap().events.success, 1);
        assert_eq!(m.joy(&joy).unwrap().events.success, 1);
        joy.buttons = vec![0, 0, 1, 0, 1];
        let c = m.joy(&joy).unwrap();
        assert_eq!((c.events.success, c.events.failure), (1, 1));
        joy.buttons = vec![0, 0, 1, 1, 0];
        assert_eq!(m.joy(&joy).unwrap().events.success, 2);
        joy.buttons = vec![0, 0, 1, 0, 0];
        joy.axes.truncate(3);
        assert_eq!(m.joy(&joy).unwrap_err(), OperatorRefused::MissingAxis(3));
    }
}
