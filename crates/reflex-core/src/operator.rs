//! What an operator says to a control loop, whatever the device: a web page, a gamepad, a
//! SpaceMouse or a ROS topic each write the same [`OperatorCommand`], so sources are
//! interchangeable and the runtime has one takeover rule.
//!
//! A command is a plain `Copy` value (it crosses to the control thread through a wait-free
//! latest-value cell); button presses are counters, so a press between two policy steps is never
//! lost when a newer command overwrites the cell.

use crate::types::{Action, ActionSpace};

/// Who acts while this command is the newest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Takeover {
    /// The operator's intervene control (a key, a shoulder button, a dead-man switch) is not
    /// held: the policy acts, whatever the sticks say.
    #[default]
    Released,
    /// The intervene control is held: the operator's action is executed, and the policy is
    /// back at the first policy step after release. Holding, not toggling.
    Held,
    /// The device has no intervene control (a SpaceMouse, a bare twist topic): the operator
    /// acts while any component exceeds the runtime's `intervention_threshold`, and for
    /// `intervention_hold_s` after.
    ByMagnitude,
}

/// Presses of the operator's event buttons so far (counters: the loop acts on each increase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorEvents {
    /// "Success": the episode ends now, labelled a success (on a real arm, the operator is the
    /// success detector).
    pub success: u32,
    /// "Failure": the episode ends now, labelled a failure.
    pub failure: u32,
    /// "Re-record": the episode ends now and is discarded (none of it is training data).
    pub rerecord: u32,
}

/// One operator command.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OperatorCommand {
    /// The operator's action, normalised like a policy's, in the task's action space (tool
    /// motion and gripper).
    pub action: Action,
    /// Whether the operator acts.
    pub takeover: Takeover,
    /// Event button presses so far.
    pub events: OperatorEvents,
    /// When the source received the command (a page's WebSocket message, a ROS message), if
    /// it says: the runtime measures from it to the command leaving the safety filter
    /// (`RuntimeStats::operator_latency`).
    pub received: Option<std::time::Instant>,
}

impl OperatorCommand {
    /// A command that drives with `action` while held.
    pub fn held(action: Action) -> Self {
        Self {
            action,
            takeover: Takeover::Held,
            events: OperatorEvents::default(),
            received: None,
        }
    }

    /// A command from a device without an intervene control (the magnitude decides).
    pub fn by_magnitude(action: Action) -> Self {
        Self {
            action,
            takeover: Takeover::ByMagnitude,
            events: OperatorEvents::default(),
            received: None,
        }
    }

    /// Nothing held, nothing moved, in `space`.
    pub fn released(space: ActionSpace) -> Self {
        Self {
            action: Action::zeros(space),
            takeover: Takeover::Released,
            events: OperatorEvents::default(),
            received: None,
        }
    }
}
