//! Real kernel TCP servers and clients for the end-to-end tests: every
//! backend runs a line server on the VIPs that answers each line with its
//! own name, so a client can tell which backend holds its connection.
//!
//! Use from a test crate with `#[path = "common/services.rs"] mod services;`
//! next to `netns.rs` (this module only needs `netns::in_netns`, passed in
//! as the namespace-entering closure's owner).
#![allow(dead_code, unreachable_pub)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one read or write may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A name server stopped (and joined) on drop.
pub struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `name\n` for every line received, on each of `listeners` (bound
/// by the caller inside the backend's namespace).
pub fn serve_name(name: &str, listeners: Vec<TcpListener>) -> io::Result<NameServer> {
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let name = format!("{name}\n");
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            let mut idle = true;
            for l in &listeners {
                if let Ok((conn, _)) = l.accept() {
                    idle = false;
                    let name = name.clone();
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || answer(conn, &name, &flag));
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    Ok(NameServer {
        stop,
        thread: Some(thread),
    })
}

fn answer(conn: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if w.write_all(name.as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// One client connection and the backend it reached.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub backend: String,
}

impl Conn {
    /// Connects and asks once who answers.
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut c = Conn {
            stream,
            reader,
            backend: String::new(),
        };
        c.backend = c.ask()?;
        Ok(c)
    }

    /// Sends a line and returns the name that came back.
    pub fn ask(&mut self) -> io::Result<String> {
        self.stream.write_all(b"who?\n")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(line.trim().to_owned())
    }
}

/// Tries to open a connection until one succeeds or `deadline` passes.
pub fn wait_until_served(addr: SocketAddr, deadline: Duration) -> io::Result<String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut c = Conn {
                reader: BufReader::new(s.try_clone()?),
                stream: s,
                backend: String::new(),
            };
            c.ask()
        }) {
            Ok(name) => return Ok(name),
            Err(e) if start.elapsed() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
