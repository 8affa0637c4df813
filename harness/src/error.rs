//! The library's one error type.
//!
//! Errors are for input that cannot be run (malformed or impossible scenarios,
//! missing files, refused sizes) and for failures of the machinery itself. A
//! loss that turns NaN is not an error: it is an [`crate::Outcome`].

use std::path::PathBuf;

/// Everything that can go wrong before or around a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A text file (a scenario, a findings line) does not parse or does not fit its format.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was expected.
        message: String,
    },
    /// The scenario parses but asks for something impossible.
    #[error("{location}: invalid `{key}`: {message}")]
    Invalid {
        /// `FILE:LINE:COL`, or the file or scenario name when the key has no line.
        location: String,
        /// Dotted key path, e.g. `optimizer.lr`.
        key: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// A measurement around a run could not be made: the base of `margins` timed out or could not run.
    #[error("{name}: {message}")]
    Unmeasured {
        /// The scenario.
        name: String,
        /// What could not be measured, and why.
        message: String,
    },
    /// The run would need more memory than allowed; nothing was allocated.
    #[error("refused: {what} needs about {need_mb} MiB, over the limit of {limit_mb} MiB ({hint})")]
    TooLarge {
        /// What was measured.
        what: String,
        /// Estimated need.
        need_mb: u64,
        /// The limit in force.
        limit_mb: u64,
        /// How to get past the limit.
        hint: &'static str,
    },
    /// A file is over the size read for its kind; nothing was read.
    #[error("{path}: refused: {what} of {bytes} bytes is over the limit of {limit} bytes; {hint}")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// What the file is, e.g. `a scenario file`.
        what: String,
        /// Its size.
        bytes: u64,
        /// The limit in force.
        limit: u64,
        /// How to get past the limit.
        hint: String,
    },
    /// A CUDA device was asked for in a build without the `cuda` feature.
    #[error("device `{0}` needs CUDA, but nanhunt was not compiled with CUDA: rebuild with `cargo build --release -p nanhunt --features cuda`")]
    CudaNotCompiled(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file (data or trace) could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A data CSV reads as CSV but its contents do not fit (a missing column, a cell that is not a number).
    #[error("{path}: {message}")]
    CsvData {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// A JSON file (campaign state, findings, a report summary) could not be read or written.
    #[error("{path}: {what}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the file was expected to be.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A scenario could not be written back as TOML.
    #[error("{path}: cannot write the scenario as TOML: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::ser::Error,
    },
    /// A plot could not be drawn.
    #[error("{path}: cannot draw the plot: {source}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The JUnit XML of a check could not be written.
    #[error("cannot write JUnit XML: {0}")]
    Junit(#[source] quick_junit::SerializeError),
    /// Candle failed (a bug in a scenario's shapes that validation missed, or a device error).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A saved file (a report's trace) is not whole: truncated, emptied or not what it should be.
    #[error("{path}: corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A report's repro could not be run again.
    #[error("{dir}: the repro could not be replayed: {message}")]
    Replay {
        /// The report directory.
        dir: PathBuf,
        /// Why the run failed.
        message: String,
    },
    /// An ONNX model file cannot be imported: it does not parse, breaks a limit, or holds an op
    /// or a construct nanhunt does not support.
    #[error("{path}: cannot import the ONNX model: {message}")]
    Onnx {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the node, tensor or limit.
        message: String,
    },
    /// A run panicked; the panic message is kept.
    #[error("panic during run: {0}")]
    Panic(String),
    /// The PyTorch side of a confirmation could not run: no interpreter, no torch, a crash.
    #[error("{python}: {message}")]
    Torch {
        /// The interpreter.
        python: PathBuf,
        /// What went wrong, and what is missing.
        message: String,
    },
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
