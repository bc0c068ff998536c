//! What the admin endpoints (HTTP's `/admin/*` and the repository's load/unload, gRPC's
//! repository RPCs, SIGHUP) ask of the serving process, which owns the graph file and the
//! model repository and applies one change at a time (`crate::server`).

use crate::error::Error;
use crate::request::Headers;

/// What an admin action answers: a summary, or why the old graph keeps serving.
pub type ReloadResult = Result<serde_json::Value, Error>;

/// What the admin endpoints ask of the server.
#[derive(Debug)]
pub enum AdminAction {
    /// Re-read the graph file (`POST /admin/reload`, SIGHUP).
    Reload,
    /// Triton's `POST /v2/repository/models/{model}/load`, with its body.
    Load {
        model: String,
        body: serde_json::Value,
    },
    /// Triton's `POST /v2/repository/models/{model}/unload`, with its body.
    Unload {
        model: String,
        body: serde_json::Value,
    },
    /// `POST /v2/repository/models/{model}/default` (`{"version": …}`): the version requests
    /// naming none get.
    Default { model: String, version: String },
}

/// One admin action and where its answer goes.
#[derive(Debug)]
pub struct AdminRequest {
    pub action: AdminAction,
    pub reply: tokio::sync::oneshot::Sender<ReloadResult>,
}

/// The admin endpoints' settings: the bearer token they require, and where actions go.
#[derive(Clone)]
pub struct Admin {
    pub token: String,
    pub reload: tokio::sync::mpsc::Sender<AdminRequest>,
}

impl Admin {
    /// Whether a request's headers carry the admin token (`Authorization: Bearer <token>`),
    /// compared in constant time.
    pub fn accepts(&self, headers: &dyn Headers) -> bool {
        let authorization = headers.header("authorization");
        let given = authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        self.is_token(given)
    }

    /// Whether `given` is the admin token, compared in constant time (the dashboard's page
    /// is opened with `?token=`: a browser's navigation carries no header).
    pub fn is_token(&self, given: &str) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            self.token.as_bytes(),
        ))
    }

    /// Hands an action to the server and waits for its answer.
    pub async fn act(&self, action: AdminAction) -> ReloadResult {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopping = || Error::unavailable("the server is stopping");
        self.reload
            .send(AdminRequest { action, reply })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

impl std::fmt::Debug for Admin {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin { token: <redacted> }")
    }
}

/// Why an admin request is refused: the transport says it in its own words (HTTP: 404 / 401
/// with `WWW-Authenticate`; gRPC: UNIMPLEMENTED / UNAUTHENTICATED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No admin token is configured: the admin endpoints are off.
    Off,
    /// The request carries no bearer token.
    Unauthorized,
    /// The request's bearer token is not the admin token.
    WrongToken,
}

/// The admin settings when `headers` carry the token of `admin`; else why not.
pub fn authorize<'a>(
    admin: Option<&'a Admin>,
    headers: &dyn Headers,
) -> Result<&'a Admin, Refusal> {
    let admin = admin.ok_or(Refusal::Off)?;
    if admin.accepts(headers) {
        return Ok(admin);
    }
    let given = headers
        .header("authorization")
        .is_some_and(|v| v.starts_with("Bearer "));
    Err(if given {
        Refusal::WrongToken
    } else {
        Refusal::Unauthorized
    })
}
