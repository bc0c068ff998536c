//! The one error type requests fail with. Its [`ErrorKind`] decides the HTTP status (in one
//! place: `http::status_of`) and, later, whether a Kafka message goes to the dead-letter topic.

use std::fmt;

/// What kind of failure, independent of transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed (bad JSON, inconsistent shape and data). HTTP 400.
    BadRequest,
    /// Not allowed by how the server was started (a model asking for packages without
    /// `--allow-pip`). HTTP 403.
    Forbidden,
    /// No such model, version or route. HTTP 404.
    NotFound,
    /// The path exists, but not for this method (a GET on `/infer`). HTTP 405.
    MethodNotAllowed,
    /// The body is larger than allowed. HTTP 413.
    PayloadTooLarge,
    /// Well-formed, but tensors don't fit what the model needs (name, dtype, shape). HTTP 422.
    Unprocessable,
    /// Too many requests in flight. HTTP 429.
    Overloaded,
    /// Not ready (models loading) or a queue is full. HTTP 503.
    Unavailable,
    /// A step or the request ran past its deadline. HTTP 504.
    Timeout,
    /// A bug or a runtime failure the caller can do nothing about. HTTP 500.
    Internal,
    /// A protocol call this server does not serve. HTTP 501.
    NotImplemented,
}

impl ErrorKind {
    /// The HTTP status for this kind (the HTTP source answers with it; the Kafka source puts it
    /// in a dead-letter record's `error-status` header).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Overloaded => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
        }
    }

    /// The gRPC status code for this kind (the gRPC source answers with it), beside the HTTP
    /// status so the two tables cannot drift: the canonical codes' numbers, named in comments.
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::BadRequest | ErrorKind::Unprocessable => 3, // INVALID_ARGUMENT
            ErrorKind::Forbidden => 7,                             // PERMISSION_DENIED
            ErrorKind::NotFound => 5,                              // NOT_FOUND
            ErrorKind::MethodNotAllowed | ErrorKind::NotImplemented => 12, // UNIMPLEMENTED
            // Admission (429) and a message past the size limit, as gRPC itself says it.
            ErrorKind::PayloadTooLarge | ErrorKind::Overloaded => 8, // RESOURCE_EXHAUSTED
            ErrorKind::Unavailable => 14,                            // UNAVAILABLE
            ErrorKind::Timeout => 4,                                 // DEADLINE_EXCEEDED
            ErrorKind::Internal => 13,                               // INTERNAL
        }
    }

    /// The kind of a gRPC status code a remote server answered with (the inverse of
    /// [`ErrorKind::grpc_code`]; codes it never gives map to the nearest kind).
    pub fn from_grpc_code(code: i32) -> ErrorKind {
        match code {
            3 | 9 | 11 => ErrorKind::BadRequest, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
            7 | 16 => ErrorKind::Forbidden,      // PERMISSION_DENIED, UNAUTHENTICATED
            5 => ErrorKind::NotFound,
            12 => ErrorKind::NotImplemented,
            8 => ErrorKind::Overloaded,
            14 | 1 | 10 => ErrorKind::Unavailable, // UNAVAILABLE, CANCELLED, ABORTED
            4 => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        }
    }

    /// The kind closest to an HTTP status a step chose (a Python model's `ModelError`):
    /// other 4xx are bad requests, other 5xx internal errors.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            413 => ErrorKind::PayloadTooLarge,
            422 => ErrorKind::Unprocessable,
            429 => ErrorKind::Overloaded,
            503 => ErrorKind::Unavailable,
            504 => ErrorKind::Timeout,
            501 => ErrorKind::NotImplemented,
            400..=499 => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether the request itself is at fault (a client error), not the server.
    pub fn is_client_error(self) -> bool {
        self.status() < 500 && self != ErrorKind::Overloaded
    }
}

/// A request failure: its kind, a message fit to show the caller, and the step it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The innermost step the error came from, when it came from one.
    pub step: Option<String>,
    /// The route a router took before the failure (the innermost router's), for the tracking
    /// event of a failed request.
    pub route: Option<String>,
    /// Where a model's own code failed (a Python traceback): logged, and shown to whoever
    /// deploys the model (a repository load's example request), never in a request's answer.
    pub traceback: Option<String>,
    /// The step's own code failed, though the answer is a client error's: an MLRun class's
    /// exception, answered 400 as MLRun answers it. Its step's error handler runs, as for a
    /// server error.
    pub step_failed: bool,
    /// The message is the whole answer, as the model's own server would give it (an
    /// MLServer class's `MLServerError`: `{"error": str(exc)}`): shown without the step.
    pub bare: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            step: None,
            route: None,
            traceback: None,
            step_failed: false,
            bare: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unprocessable, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Timeout, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Records the route a router took, unless a deeper router already did.
    pub fn on_route(mut self, route: &str) -> Error {
        if self.route.is_none() {
            self.route = Some(route.to_owned());
        }
        self
    }

    /// Records the step the error happened in, unless a deeper step already did.
    pub fn in_step(mut self, step: &str) -> Error {
        if self.step.is_none() {
            self.step = Some(step.to_owned());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) if !self.bare => write!(f, "step `{step}`: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innermost_step_wins() {
        let e = Error::unprocessable("bad")
            .in_step("model")
            .in_step("router");
        assert_eq!(e.to_string(), "step `model`: bad");
        assert_eq!(e.kind, ErrorKind::Unprocessable);
    }

    #[test]
    fn a_bare_message_is_the_whole_answer() {
        let mut e = Error::bad_request("something really bad happened").in_step("model");
        e.bare = true;
        assert_eq!(e.to_string(), "something really bad happened");
    }
}
