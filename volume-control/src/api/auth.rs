//! Who is calling (the cluster token or a node credential, from the bearer token) and whether
//! this instance answers at all (only the serving one, among several).

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_control_model::credential;

use super::Shared;
use super::error::ApiError;

/// Who is calling, from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The cluster token, or no token configured.
    Operator,
    /// A node credential.
    Node(String),
}

impl Caller {
    /// Refuses a node acting for another node.
    pub(crate) fn acts_for(&self, node: &str) -> Result<(), ApiError> {
        match self {
            Caller::Node(n) if n != node => Err(ApiError::Forbidden(format!(
                "node {n}'s credential may not act for node {node}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses anyone but the operator.
    pub(crate) fn operator(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Caller::Node(n) => Err(ApiError::Forbidden(format!(
                "{what} needs the cluster token; node {n}'s credential may not"
            ))),
            Caller::Operator => Ok(()),
        }
    }
}

pub(super) async fn auth(AxState(c): AxState<Shared>, mut req: Request, next: Next) -> Response {
    let caller = match &c.token {
        None => Some(Caller::Operator),
        Some(tok) => req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|given| {
                if credential::same_token(given, tok) {
                    Some(Caller::Operator)
                } else {
                    credential::verify(tok, given).map(Caller::Node)
                }
            }),
    };
    match caller {
        Some(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

/// Among several instances, only the serving one answers the API; the Raft group's own routes,
/// the version and metrics are answered by every instance.
pub(super) async fn gate(AxState(c): AxState<Shared>, req: Request, next: Next) -> Response {
    let p = req.uri().path();
    let open = p == "/metrics" || p == "/v1/version" || p.starts_with("/v1/berth/raft");
    if !open && !c.seat.serving() {
        return ApiError::NotLeader(c.leader_url()).into_response();
    }
    next.run(req).await
}
