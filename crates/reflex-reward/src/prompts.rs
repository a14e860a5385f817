//! The questions Reflex asks a vision-language model. Each asks for an analysis first and a
//! machine-readable answer last, and says exactly what shape that answer has.

use crate::parse::Grid;

/// Keypoint proposal on one grid-annotated image.
pub fn keypoints(instruction: &str, grid: &Grid) -> String {
    format!(
        "You are guiding a robot arm. Task: {instruction}\n\
         The image is {w}x{h} pixels, overlaid with a grid of {c} columns (A-{last}) and {r} rows \
         (1-{r}).\n\
         1. Find the object the task is about and the point on it the gripper should grasp \
         (the affordance point).\n\
         2. Give 1 to 3 waypoints, in order, that the grasped point should move through to \
         finish the task.\n\
         Think step by step, then end with one JSON object, coordinates in pixels of this image \
         (x to the right, y down):\n\
         {{\"affordance\": [x, y], \"waypoints\": [[x, y], ...]}}",
        w = grid.width,
        h = grid.height,
        c = grid.cols,
        r = grid.rows,
        last = (b'A' + grid.cols.clamp(1, 26) as u8 - 1) as char,
    )
}

/// Pairwise preference between two frames.
pub fn preference(instruction: &str) -> String {
    format!(
        "Task: {instruction}\n\
         Image 1 and Image 2 are two moments of a robot arm attempting this task.\n\
         First describe what each image shows about progress on the task. Then, on the last \
         line, answer with a single number: 0 if the task is closer to done in Image 1, 1 if \
         it is closer to done in Image 2, -1 if you cannot tell."
    )
}

/// Success yes/no on one frame.
pub fn success(instruction: &str) -> String {
    format!(
        "Task: {instruction}\n\
         Has the robot completed the task in this image? Answer with one JSON object: \
         {{\"success\": true}} or {{\"success\": false}}."
    )
}

/// The kind of question a prompt asks (how the oracle server tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`keypoints`].
    Keypoints,
    /// [`preference`].
    Preference,
    /// [`success`].
    Success,
}

impl Kind {
    /// Recognises one of the prompts above.
    pub fn of(prompt: &str) -> Option<Self> {
        if prompt.contains("\"affordance\"") {
            Some(Self::Keypoints)
        } else if prompt.contains("Image 1 and Image 2") {
            Some(Self::Preference)
        } else if prompt.contains("\"success\"") {
            Some(Self::Success)
        } else {
            None
        }
    }

    /// Name used in hints and counters.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keypoints => "keypoints",
            Self::Preference => "preference",
            Self::Success => "success",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_told_apart() {
        let g = Grid {
            width: 160,
            height: 120,
            cols: 8,
            rows: 6,
        };
        let k = keypoints("pick up the red cube", &g);
        assert!(k.contains("160x120") && k.contains("(A-H)"), "{k}");
        assert_eq!(Kind::of(&k), Some(Kind::Keypoints));
        assert_eq!(Kind::of(&preference("x")), Some(Kind::Preference));
        assert_eq!(Kind::of(&success("x")), Some(Kind::Success));
        assert_eq!(Kind::of("hello"), None);
    }
}
