//! What goes wrong starting a Python worker or reading from it, as one type. Each variant's
//! message is what the user reads: a graph error when the model loads, readiness while it
//! is tried again, or the reason of the 503 its callers get when the worker goes away.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a worker did not start, or what reading from it found.
#[derive(Debug)]
pub enum WorkerError {
    /// The runtime's files could not be written (shared: it is tried once per process).
    Runtime {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// A worker's thread could not be started.
    Thread(io::Error),
    /// A worker's thread ended before saying whether its process started.
    ThreadEnded,
    /// The interpreter could not be started.
    Spawn { python: String, source: io::Error },
    /// The worker's pipes could not be handed to the runtime.
    Pipes(io::Error),
    /// Reading from the worker failed.
    Read(io::Error),
    /// The worker went away (its output ended, or its input broke): what it printed says
    /// why, so this one's own message is only a fallback.
    Gone,
    /// A frame whose length is out of bounds.
    FrameSize(usize),
    /// A frame that does not parse: what is wrong with it.
    Malformed(&'static str),
    /// A frame whose metadata is not JSON.
    Meta(serde_json::Error),
    /// A tensor of a datatype code that is none.
    Datatype(u8),
    /// An output whose data is not what its datatype and shape say.
    Output {
        name: String,
        source: Box<servegraph_engine::Error>,
    },
    /// A tensor the engine's checks refuse.
    Tensor(Box<servegraph_engine::Error>),
    /// The first frame was not HELLO.
    Greeting(u8),
    /// An answer of a kind that does not answer `call` (`LOAD`, `INFER`).
    Answer { call: &'static str, kind: u8 },
    /// The answer to another call than the one waiting.
    OtherCall { answered: u64, waiting: u64 },
    /// The model's code failed to load: Python's error in words (`frame::python_error`).
    Load(String),
    /// The load overran `load_timeout_ms` and the watchdog killed it.
    LoadTimeout { model: String, timeout_ms: u128 },
    /// The process exited while starting, with the last lines it printed.
    Exited {
        python: String,
        status: String,
        printed: Vec<String>,
    },
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Runtime { path, source } => write!(
                f,
                "cannot write the Python runtime to {}: {source}",
                path.display()
            ),
            WorkerError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            WorkerError::ThreadEnded => {
                f.write_str("the Python worker's thread ended while starting it")
            }
            WorkerError::Spawn { python, source } => {
                write!(f, "cannot start Python worker `{python}`: {source}")
            }
            WorkerError::Pipes(e) => write!(f, "cannot watch the worker's pipes: {e}"),
            WorkerError::Read(e) => write!(f, "reading from the worker: {e}"),
            WorkerError::Gone => f.write_str("the worker went away"),
            WorkerError::FrameSize(n) => write!(f, "the worker sent a frame of {n} bytes"),
            WorkerError::Malformed(what) => {
                write!(f, "the worker sent a malformed frame ({what})")
            }
            WorkerError::Meta(e) => write!(f, "the worker sent a malformed frame ({e})"),
            WorkerError::Datatype(code) => {
                write!(
                    f,
                    "the worker sent a malformed frame (datatype code {code})"
                )
            }
            WorkerError::Output { name, source } => {
                write!(f, "output `{name}`: {}", source.message)
            }
            WorkerError::Tensor(e) => f.write_str(&e.message),
            WorkerError::Greeting(kind) => {
                write!(f, "the worker greeted with frame kind {kind}")
            }
            WorkerError::Answer { call, kind } => {
                write!(f, "the worker answered {call} with frame kind {kind}")
            }
            WorkerError::OtherCall { answered, waiting } => {
                write!(f, "the worker answered call {answered} for call {waiting}")
            }
            WorkerError::Load(message) => f.write_str(message),
            WorkerError::LoadTimeout { model, timeout_ms } => write!(
                f,
                "Python model `{model}` did not load within {timeout_ms} ms (load_timeout_ms)"
            ),
            WorkerError::Exited {
                python,
                status,
                printed,
            } => {
                write!(
                    f,
                    "the Python worker (`{python}`) exited while starting ({status})"
                )?;
                if !printed.is_empty() {
                    write!(f, ", after printing:\n{}", printed.join("\n"))?;
                }
                if printed
                    .iter()
                    .any(|l| l.contains("No module named 'numpy'"))
                {
                    f.write_str("\n(the interpreter needs NumPy; set `python:` or SERVEGRAPH_PYTHON to one that has it)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::Runtime { source, .. } => Some(&**source),
            WorkerError::Thread(e) | WorkerError::Pipes(e) | WorkerError::Read(e) => Some(e),
            WorkerError::Spawn { source, .. } => Some(source),
            WorkerError::Meta(e) => Some(e),
            WorkerError::Output { source, .. } | WorkerError::Tensor(source) => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_while_starting_says_what_the_worker_printed_and_what_numpy_needs() {
        let exited = |printed: &[&str]| WorkerError::Exited {
            python: "python3".into(),
            status: "exit status 1".into(),
            printed: printed.iter().map(|l| l.to_string()).collect(),
        };
        assert_eq!(
            exited(&[]).to_string(),
            "the Python worker (`python3`) exited while starting (exit status 1)"
        );
        assert_eq!(
            exited(&["Traceback:", "ModuleNotFoundError: No module named 'numpy'"]).to_string(),
            "the Python worker (`python3`) exited while starting (exit status 1), after printing:\n\
             Traceback:\nModuleNotFoundError: No module named 'numpy'\n\
             (the interpreter needs NumPy; set `python:` or SERVEGRAPH_PYTHON to one that has it)"
        );
    }

    #[test]
    fn frame_errors_say_what_the_worker_sent() {
        assert_eq!(
            WorkerError::Malformed("truncated").to_string(),
            "the worker sent a malformed frame (truncated)"
        );
        assert_eq!(
            WorkerError::Datatype(99).to_string(),
            "the worker sent a malformed frame (datatype code 99)"
        );
        assert_eq!(
            WorkerError::OtherCall {
                answered: 3,
                waiting: 2
            }
            .to_string(),
            "the worker answered call 3 for call 2"
        );
    }
}
