//! The library's error type. Every failure a user can cause (bad files, wrong
//! shapes, missing drivers, GPU out-of-memory) comes back as one of these with
//! enough context to act on; nothing in the library panics on bad input.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter could be found or opened.
    #[error("no usable GPU adapter: {reason}\n{help}")]
    NoAdapter { reason: String, help: String },

    /// The GPU reported a validation error or the device was lost.
    /// `op` names the op(s) and tensor shapes involved.
    #[error("GPU error in {op}: {message}")]
    Gpu { op: String, message: String },

    /// The GPU could not allocate memory.
    #[error("GPU out of memory in {op}: requested {bytes} bytes ({what}); try smaller tiles or a smaller batch")]
    OutOfMemory { op: String, bytes: u64, what: String },

    /// Tensor shapes that do not fit an op's shape rules.
    #[error("shape error in {op}: {message}")]
    Shape { op: String, message: String },

    /// A file that could not be read or written, or whose content is wrong.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    /// Invalid settings or arguments.
    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), message: message.into() }
    }
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), message: message.to_string() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}
