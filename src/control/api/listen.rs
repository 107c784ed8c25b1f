//! The admin API's listeners (TCP or a unix socket) and the life of one
//! connection: the limits of the module above applied around hyper's
//! HTTP/1.1 server.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::{routes, ApiError, Shared, BODY_TIMEOUT, CONNECTION_LIFETIME, HEADER_TIMEOUT};
use crate::control::config::AdminListen;

/// A bound listener of either kind.
pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds `listen` (inside a runtime context) and returns the listener with
/// the address it really has (port 0 resolved).
pub(super) fn bind(listen: &AdminListen) -> Result<(Listener, AdminListen), ApiError> {
    let bind_err = |error| ApiError::Bind {
        addr: super::describe(listen),
        error,
    };
    match listen {
        AdminListen::Tcp(addr) => {
            let std = std::net::TcpListener::bind(addr).map_err(bind_err)?;
            std.set_nonblocking(true).map_err(bind_err)?;
            let local = std.local_addr().map_err(bind_err)?;
            let l = TcpListener::from_std(std).map_err(bind_err)?;
            Ok((Listener::Tcp(l), AdminListen::Tcp(local)))
        }
        AdminListen::Unix(path) => {
            remove_stale_socket(path)?;
            let std = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(bind_err)?;
            std.set_nonblocking(true).map_err(bind_err)?;
            let l = UnixListener::from_std(std).map_err(bind_err)?;
            Ok((Listener::Unix(l), AdminListen::Unix(path.clone())))
        }
    }
}

/// Removes a socket file left by a process that is gone. A socket that
/// still accepts connections belongs to a running appliance, and a path
/// that is not a socket is someone's file: both are refused.
fn remove_stale_socket(path: &Path) -> Result<(), ApiError> {
    let shown = path.display().to_string();
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ApiError::Bind {
            addr: format!("unix:{shown}"),
            error,
        }),
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::SocketInUse { path: shown });
            }
            std::fs::remove_file(path).map_err(|error| ApiError::Bind {
                addr: format!("unix:{shown}"),
                error,
            })
        }
        Ok(_) => Err(ApiError::NotASocket { path: shown }),
    }
}

/// Accepts connections until the task is dropped. Past the connection
/// limit a new connection is closed at once: the client sees a reset
/// rather than a queue that hides an overload.
pub(super) async fn accept_loop(listener: Listener, shared: Arc<Shared>, limit: Arc<Semaphore>) {
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin on an error that will repeat at once.
                tracing::warn!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!("admin API connection limit reached: connection closed");
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match stream {
                Stream::Tcp(s) => connection(s, shared).await,
                Stream::Unix(s) => connection(s, shared).await,
            }
            drop(permit);
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves one connection (keep-alive included) within its lifetime.
async fn connection<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, shared, BODY_TIMEOUT).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "admin API connection ended"),
        Err(_) => tracing::debug!("admin API connection closed: lifetime reached"),
    }
}
