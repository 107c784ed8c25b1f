//! Requests to answers: routing, the bearer token, body limits, and the
//! mapping of control-plane errors to HTTP status codes.
//!
//! Every answer is JSON; every refusal is `{"error": "..."}` with a 4xx
//! status when the request was wrong and 500 when the appliance failed
//! (the state file could not be written, say). Nothing is changed before
//! the request has been read, parsed and authorised, and the control plane
//! changes all or nothing, so a refused request leaves no trace.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::Shared;
use crate::control::plane::ControlError;
use crate::control::versions::VersionError;

/// The largest request body accepted (`413` past it). A rollout to a
/// thousand backends is about 20 KiB of JSON.
pub const MAX_BODY: usize = 64 * 1024;

/// A refusal: its status and the message shown to the operator.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    /// Methods the path accepts, for the `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn method(allow: &'static str) -> Failure {
        Failure {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method not allowed; this path accepts {allow}"),
            allow: Some(allow),
        }
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Failure {
        let status = match &e {
            ControlError::Version(v) => version_status(v),
            ControlError::Config(_) => StatusCode::BAD_REQUEST,
            _ if e.is_client_error() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "admin API request failed");
        }
        Failure::new(status, e.to_string())
    }
}

/// 404 for what does not exist, 409 for what conflicts with the running
/// state (retrying later or after another change may work), 400 for a
/// request that can never succeed as written.
fn version_status(e: &VersionError) -> StatusCode {
    use VersionError as V;
    match e {
        V::UnknownService(_) | V::UnknownVersion { .. } | V::UnknownBackend { .. } => {
            StatusCode::NOT_FOUND
        }
        V::SameBackends { .. }
        | V::PoolExhausted { .. }
        | V::VipUnavailable { .. }
        | V::TooManyVersions { .. }
        | V::NothingDraining(_)
        | V::NoActive(_) => StatusCode::CONFLICT,
        V::NoBackends(_)
        | V::DuplicateBackend { .. }
        | V::BadBackend { .. }
        | V::BackendInPool { .. }
        | V::NoEncapSource { .. }
        | V::UnknownPool { .. }
        | V::Maglev { .. } => StatusCode::BAD_REQUEST,
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Services,
    Service(String),
    Rollout(String),
    Rollback(String),
    Reload,
}

/// `POST /v1/services/{name}/rollout`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutRequest {
    backends: Vec<String>,
}

/// Answers one request. Never fails: every refusal is a JSON answer.
pub(super) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match answer(req, &shared, body_timeout).await {
        Ok((status, body)) => {
            if method != Method::GET {
                tracing::info!(%method, %path, status = status.as_u16(), "admin request");
            }
            json(status, body)
        }
        Err(f) => {
            tracing::info!(%method, %path, status = f.status.as_u16(), error = %f.message, "admin request refused");
            let mut resp = json(f.status, to_json(&ErrorBody { error: &f.message }));
            if let Some(allow) = f.allow {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            if f.status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"cutover\""),
                );
            }
            resp
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

async fn answer(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    body_timeout: Duration,
) -> Result<(StatusCode, Vec<u8>), Failure> {
    let path = req.uri().path();
    if path == "/healthz" {
        return match *req.method() {
            Method::GET | Method::HEAD => Ok((StatusCode::OK, b"{\"status\":\"ok\"}\n".to_vec())),
            _ => Err(Failure::method("GET")),
        };
    }
    if path != "/v1" && !path.starts_with("/v1/") {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no such path {path}"),
        ));
    }
    // Authorise before routing, so an unauthorised client learns nothing
    // about which paths or services exist.
    authorise(req.headers(), shared.token.as_deref())?;
    let route = route(req.method(), path)?;
    match route {
        Route::Services => {
            let plane = Arc::clone(&shared.plane);
            let services = blocking(move || Ok(plane.status())).await?;
            Ok((StatusCode::OK, to_json(&services)))
        }
        Route::Service(name) => {
            let plane = Arc::clone(&shared.plane);
            let service = blocking(move || Ok(plane.status()))
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| {
                    Failure::from(ControlError::Version(VersionError::UnknownService(name)))
                })?;
            Ok((StatusCode::OK, to_json(&service)))
        }
        Route::Rollout(name) => {
            check_json(req.headers())?;
            let body = read_body(req, body_timeout).await?;
            let backends = parse_rollout(&body)?;
            let plane = Arc::clone(&shared.plane);
            let v = blocking(move || plane.rollout(&name, &backends)).await?;
            Ok((StatusCode::CREATED, to_json(&v)))
        }
        Route::Rollback(name) => {
            let plane = Arc::clone(&shared.plane);
            let v = blocking(move || plane.rollback(&name)).await?;
            Ok((StatusCode::OK, to_json(&v)))
        }
        Route::Reload => {
            let plane = Arc::clone(&shared.plane);
            let report = blocking(move || plane.reload()).await?;
            Ok((StatusCode::OK, to_json(&report)))
        }
    }
}

/// Runs a control-plane call on the blocking pool: it takes a lock and may
/// fsync the state file, which must not stall the other connections.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => {
            tracing::error!(error = %e, "admin API call panicked");
            Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the appliance's log",
            ))
        }
    }
}

/// `/v1/...` to a route, or 404 (no such path) / 405 (wrong method).
fn route(method: &Method, path: &str) -> Result<Route, Failure> {
    let not_found = || Failure::new(StatusCode::NOT_FOUND, format!("no such path {path}"));
    let rest = path.strip_prefix("/v1/").ok_or_else(not_found)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (route, allow) = match segments.as_slice() {
        ["services"] => (Route::Services, "GET"),
        ["services", name] if !name.is_empty() => (Route::Service((*name).to_owned()), "GET"),
        ["services", name, "rollout"] if !name.is_empty() => {
            (Route::Rollout((*name).to_owned()), "POST")
        }
        ["services", name, "rollback"] if !name.is_empty() => {
            (Route::Rollback((*name).to_owned()), "POST")
        }
        ["reload"] => (Route::Reload, "POST"),
        _ => return Err(not_found()),
    };
    let ok = match allow {
        "GET" => *method == Method::GET || *method == Method::HEAD,
        _ => *method == Method::POST,
    };
    if ok {
        Ok(route)
    } else {
        Err(Failure::method(allow))
    }
}

/// Requires `Authorization: Bearer <token>` when a token is configured.
fn authorise(headers: &HeaderMap, token: Option<&[u8]>) -> Result<(), Failure> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        None => Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
        )),
        Some(g) if constant_time_eq(g.as_bytes(), token) => Ok(()),
        Some(_) => Err(Failure::new(StatusCode::UNAUTHORIZED, "wrong bearer token")),
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right (the length may still show).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A body must be JSON when it says what it is; none at all is taken as
/// JSON (a bare `curl -d` is the exception that gets a clear 415).
fn check_json(headers: &HeaderMap) -> Result<(), Failure> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = ct
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {media:?} is not supported; send application/json"),
        ))
    }
}

/// The whole body, at most [`MAX_BODY`] bytes, within `timeout`.
async fn read_body(req: Request<Incoming>, timeout: Duration) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `{"backends": ["10.0.1.11", ...]}` to addresses; each bad one named.
fn parse_rollout(body: &[u8]) -> Result<Vec<IpAddr>, Failure> {
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, m);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "the request body is empty; send {\"backends\": [\"ADDR\", ...]}".into(),
        ));
    }
    let req: RolloutRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))?;
    req.backends
        .iter()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("backend {s:?} is not an IP address")))
        })
        .collect()
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Our own types always serialise; an empty object beats a panic.
    let mut out = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(
            route(&Method::GET, "/v1/services").ok(),
            Some(Route::Services)
        );
        assert_eq!(
            route(&Method::POST, "/v1/services/web/rollout").ok(),
            Some(Route::Rollout("web".into()))
        );
        assert_eq!(
            route(&Method::POST, "/v1/services/web/rollback").ok(),
            Some(Route::Rollback("web".into()))
        );
        assert_eq!(route(&Method::POST, "/v1/reload").ok(), Some(Route::Reload));
        let wrong = route(&Method::GET, "/v1/reload")
            .err()
            .map(|f| (f.status, f.allow));
        assert_eq!(wrong, Some((StatusCode::METHOD_NOT_ALLOWED, Some("POST"))));
        for p in [
            "/v1/",
            "/v1/services/",
            "/v1/services//rollout",
            "/v1/x",
            "/v1/services/web/x",
        ] {
            let f = route(&Method::POST, p).err().map(|f| f.status);
            assert_eq!(f, Some(StatusCode::NOT_FOUND), "{p}");
        }
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        let mut h = HeaderMap::new();
        assert!(authorise(&h, None).is_ok());
        assert!(authorise(&h, Some(b"t0k")).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer t0k"),
        );
        assert!(authorise(&h, Some(b"t0k")).is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(authorise(&h, Some(b"t0k")).is_err());
    }

    #[test]
    fn rollout_bodies() {
        assert_eq!(
            parse_rollout(br#"{"backends": ["10.0.1.11", "2001:db8::1"]}"#).ok(),
            Some(vec![
                "10.0.1.11".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ])
        );
        for body in [
            &b""[..],
            b"{",
            b"{}",
            br#"{"backends": ["x"]}"#,
            br#"{"backend": []}"#,
        ] {
            let f = parse_rollout(body).err().map(|f| f.status);
            assert_eq!(f, Some(StatusCode::BAD_REQUEST));
        }
    }
}
