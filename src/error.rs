//! One error type for the whole crate: every failure names what went wrong (the op and the shapes,
//! the file and the problem, the adapter and its limit) instead of panicking inside a kernel.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found: {0}. On Linux without a GPU, install lavapipe (software Vulkan): `apt-get install mesa-vulkan-drivers`"
    )]
    NoAdapter(String),

    #[error("could not open a device on adapter `{adapter}`: {reason}")]
    DeviceRequest { adapter: String, reason: String },

    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    #[error("{what} needs {bytes} bytes, more than the adapter `{adapter}` allows for one storage binding ({limit} bytes)")]
    TooLarge { what: String, bytes: u64, limit: u64, adapter: String },

    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// The search's store (a PostgreSQL database) failed, or refused what was asked.
    #[error("{0}")]
    Store(String),

    #[error("training diverged: {0}")]
    Diverged(String),

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
    /// True for a model too large for the device (out of memory, a binding over the limit): a
    /// search records the model as failed, avoids that size, and goes on. A lost device is not
    /// one: it ends the search.
    pub fn is_resource_failure(&self) -> bool {
        matches!(self, Error::OutOfMemory(_) | Error::TooLarge { .. })
    }
}
