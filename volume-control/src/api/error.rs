//! The API's error replies: every refusal as Flocker's `{"description": …}` with its status
//! code (and the request counted where a handover is refused), and request bodies parsed into one.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_control_model::model::ControlError;
use berth_control_model::wire::ErrorBody;
use serde::de::DeserializeOwned;

/// An error reply in Flocker's `{"description": …}` form.
#[derive(Debug)]
pub enum ApiError {
    Control(ControlError),
    BadJson(String),
    Unauthorized,
    Forbidden(String),
    Store(String),
    /// A replicated member that does not serve: the leader's URL, if known.
    NotLeader(Option<String>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut epoch = None;
        let mut retry_after_ms = None;
        let (code, desc) = match &self {
            ApiError::Control(e) => {
                let code = match e {
                    ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                    ControlError::Deleted(_) => StatusCode::METHOD_NOT_ALLOWED,
                    ControlError::Conflict(_) | ControlError::Fence(_) => StatusCode::CONFLICT,
                    ControlError::Epoch { epoch: e, .. } => {
                        epoch = Some(*e);
                        StatusCode::CONFLICT
                    }
                    ControlError::Leased {
                        epoch: e,
                        remaining_ms,
                        ..
                    } => {
                        epoch = Some(*e);
                        retry_after_ms = Some(*remaining_ms);
                        crate::metrics::control().handovers_refused.inc();
                        StatusCode::LOCKED
                    }
                    ControlError::TagMismatch { .. } => StatusCode::PRECONDITION_FAILED,
                };
                (code, e.to_string())
            }
            ApiError::BadJson(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::Store(m) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {m}")),
            ApiError::NotLeader(l) => (
                StatusCode::SERVICE_UNAVAILABLE,
                match l {
                    Some(l) => {
                        format!("this control instance is not the leader; the leader is {l}")
                    }
                    None => {
                        "this control instance is not the leader, and no leader is known yet".into()
                    }
                },
            ),
        };
        let leader = match &self {
            ApiError::NotLeader(l) => l.clone(),
            _ => None,
        };
        if leader.is_some() || matches!(self, ApiError::NotLeader(_)) {
            tracing::debug!(%desc, "control request sent to the leader");
        } else if code.is_server_error() {
            tracing::error!(%desc, "control request failed");
        } else {
            tracing::info!(status = code.as_u16(), %desc, "control request refused");
        }
        let body = ErrorBody {
            errors: (code == StatusCode::BAD_REQUEST).then(|| vec![desc.clone()]),
            description: desc,
            epoch,
            retry_after_ms,
            leader,
        };
        let mut r = (code, Json(body)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(berth_control_model::credential::BEARER_CHALLENGE),
            );
        }
        if let Some(ms) = retry_after_ms {
            // HTTP's own header, in whole seconds rounded up; the body has the milliseconds.
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000)),
            );
        }
        r
    }
}

pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadJson(format!("request body: {e}")))
}
