//! The simulator's error type. Every variant names the file or field at fault.

use std::path::PathBuf;

/// Errors from loading or running a simulated task.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A task file is malformed or inconsistent.
    #[error("{path}: field `{field}`: {message}")]
    Task {
        /// The task file.
        path: PathBuf,
        /// The field at fault (with its table path and line where known).
        field: String,
        /// What was expected.
        message: String,
    },
    /// The robot description is unusable.
    #[error(transparent)]
    Model(#[from] reflex_core::ModelError),
    /// The URDF loaded but does not match what the simulator needs.
    #[error("{path}: {message}")]
    Urdf {
        /// The URDF file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// An action of the wrong length for the task's action space.
    #[error("action has {got} components, the task's action space needs {expected}")]
    ActionDim {
        /// Components given.
        got: usize,
        /// Components needed.
        expected: usize,
    },
    /// A camera image could not be written.
    #[error("{path}: cannot write image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting given to the simulator (not from a task file) is out of range.
    #[error("{setting}: {message}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What was expected.
        message: String,
    },
}
