//! The admin API (SPEC §6): JSON over HTTP/1.1 on a TCP address or a unix
//! socket, the way operators and `cutover status|rollout|rollback|reload`
//! reach the [`ControlPlane`].
//!
//! The server runs on a thread of its own with a small current-thread tokio
//! runtime, like the DNS server, so nothing here can stall a worker. Calls
//! into the control plane (which may fsync the state file) run on tokio's
//! blocking pool, so a slow rollout does not hold up `/healthz`. Every
//! connection is bounded: a connection limit, a header-read timeout, a body
//! size limit and a body-read timeout, and a lifetime. A refused request
//! changes nothing: the control plane applies every change to a copy.

mod listen;
mod routes;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use crate::control::config::{Admin, AdminListen};
use crate::control::plane::ControlPlane;

pub use routes::MAX_BODY;

/// Connections served at once; more are closed as soon as they are
/// accepted. An admin API has a handful of clients.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection may stay open, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("admin token file {path}: {error}")]
    TokenFile { path: String, error: std::io::Error },
    #[error("admin token file {path} is empty")]
    EmptyToken { path: String },
    #[error("admin API on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("admin API socket {path} is in use by a running process")]
    SocketInUse { path: String },
    #[error("admin API socket path {path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("admin API runtime: {0}")]
    Runtime(std::io::Error),
}

/// What every connection shares.
struct Shared {
    plane: Arc<ControlPlane>,
    /// The bearer token every `/v1` request must carry, when configured.
    token: Option<Vec<u8>>,
}

/// A running admin API. Dropping it stops the server too;
/// [`ApiServer::shutdown`] also waits for its thread.
#[derive(Debug)]
pub struct ApiServer {
    local: AdminListen,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the admin API on `cfg.listen` for `plane`.
///
/// The token file is read and the socket bound before this returns, so a
/// missing token or a busy address is an error at start, not a log line
/// later. A unix socket path left behind by a dead process is replaced; a
/// live one, or a path that is not a socket, is refused. The socket file is
/// made `0600`: on a unix socket, file permissions are the access control.
pub fn serve(cfg: &Admin, plane: Arc<ControlPlane>) -> Result<ApiServer, ApiError> {
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApiError::Runtime)?;
    let (listener, local) = {
        let _enter = runtime.enter();
        listen::bind(&cfg.listen)?
    };
    let shared = Arc::new(Shared { plane, token });
    let (stop, stopped) = oneshot::channel::<()>();
    let socket_path = match &local {
        AdminListen::Unix(p) => Some(p.clone()),
        AdminListen::Tcp(_) => None,
    };
    let thread = std::thread::Builder::new()
        .name("cutover-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
                tokio::select! {
                    () = listen::accept_loop(listener, shared, limit) => {}
                    // Resolves on shutdown() and when the handle is dropped.
                    _ = stopped => {}
                }
            });
            // Connections still open are cut when the runtime goes.
            drop(runtime);
            if let Some(path) = socket_path {
                let _ = std::fs::remove_file(path);
            }
        })
        .map_err(ApiError::Runtime)?;
    tracing::info!(listen = %describe(&local), auth = cfg.token_file.is_some(), "admin API started");
    Ok(ApiServer {
        local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl ApiServer {
    /// Where the server listens; with port 0 in the configuration, the real
    /// port.
    pub fn local_addr(&self) -> &AdminListen {
        &self.local
    }

    /// The TCP address, when listening on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self.local {
            AdminListen::Tcp(a) => Some(a),
            AdminListen::Unix(_) => None,
        }
    }

    /// Stops the listener, cuts open connections, removes the unix socket
    /// file and waits for the server's thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("admin API thread panicked");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// `127.0.0.1:9180` or `unix:/run/cutover.sock`, as the configuration and
/// `cutover --admin` write it.
pub fn describe(listen: &AdminListen) -> String {
    match listen {
        AdminListen::Tcp(a) => a.to_string(),
        AdminListen::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// The token, trimmed; an empty file would make every request authorised
/// by an empty header, so it is refused.
fn read_token(path: &Path) -> Result<Vec<u8>, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|error| ApiError::TokenFile {
        path: path.display().to_string(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ApiError::EmptyToken {
            path: path.display().to_string(),
        });
    }
    Ok(token.as_bytes().to_vec())
}
