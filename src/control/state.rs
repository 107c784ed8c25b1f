//! The state file (`[state] path`): what survives a restart of the process.
//!
//! After a restart during a drain the old version must still be served
//! through its old VIP and released later, and a VIP that was just released
//! must still cool down; the configuration file alone cannot say any of
//! that. So every change of the versions is written here as JSON, atomically
//! (a temporary file in the same directory, fsync, rename over the old one,
//! fsync of the directory): a crash leaves the old file or the new one,
//! never half of either. A file that cannot be read or parsed stops the
//! start with a clear message and is never silently replaced, since
//! starting fresh would hand the draining versions' VIPs out again.
//!
//! Times are unix milliseconds. [`FORMAT`] is raised on any incompatible
//! change; a file of another format is refused, not guessed at.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control::versions::ReleaseReason;
use crate::snapshot::VersionState;

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Everything the version manager needs to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// When the file was written (unix ms), for the operator.
    pub written_at: u64,
    /// The uid the next version gets; uids are never reused.
    pub next_uid: u64,
    pub services: Vec<PersistedService>,
    /// Released VIPs still cooling down.
    pub cooldowns: Vec<PersistedCooldown>,
}

/// A service with its settings as they were when it was last configured
/// (a service removed from the file still drains with them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedService {
    pub name: String,
    /// `tcp/80`.
    pub ports: Vec<String>,
    /// `ipip` or `l2dsr`.
    pub forwarding: String,
    /// `ipv4`, `ipv6`.
    pub families: Vec<String>,
    /// The pool's name.
    pub pool: String,
    /// The configured first-version VIPs.
    pub vips: Vec<IpAddr>,
    pub drain_grace_ms: u64,
    pub drain_quiet_ms: u64,
    pub drain_timeout_ms: u64,
    /// The id the next version gets.
    pub next_id: u32,
    /// Left the configuration; drains, then goes.
    pub removed: bool,
    /// Live versions and the released history, oldest first.
    pub versions: Vec<PersistedVersion>,
}

/// One version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedVersion {
    pub id: u32,
    pub uid: u64,
    /// Meaningful while live; a released version's slot is free.
    pub slot: u32,
    pub vips: Vec<IpAddr>,
    pub backends: Vec<PersistedBackend>,
    pub state: VersionState,
    pub created_at: u64,
    pub draining_since: Option<u64>,
    pub released_at: Option<u64>,
    pub release_reason: Option<ReleaseReason>,
}

/// A backend and its last health verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedBackend {
    pub addr: IpAddr,
    pub healthy: bool,
}

/// A released VIP and the end of its cooldown (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedCooldown {
    pub vip: IpAddr,
    pub until: u64,
}

/// Why the state file could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read it: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path}: cannot write it: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("state file {path} is corrupt: {source}; it was left as it is: repair it, or move it away to start with fresh versions (their VIPs may then be reused at once)")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has format {found}, this build reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("state file is inconsistent: {0}")]
    Invalid(String),
}

/// Reads the state file: `Ok(None)` when there is none (a fresh start), an
/// error for anything that exists but cannot be used.
pub fn load(path: &Path) -> Result<Option<PersistedState>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Read the format first, so a future format is named as such rather
    // than reported as corrupt.
    #[derive(Deserialize)]
    struct Header {
        format: u32,
    }
    let corrupt = |source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let header: Header = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if header.format != FORMAT {
        return Err(StateError::Format {
            path: path.to_path_buf(),
            found: header.format,
        });
    }
    let state = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Ok(Some(state))
}

/// Writes `state` to `path` atomically; see the module documentation.
pub fn save(path: &Path, state: &PersistedState) -> Result<(), StateError> {
    let werr = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| werr(io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        werr(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = write_synced(&tmp, &json).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    File::open(&dir).and_then(|d| d.sync_all()).map_err(werr)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            format: FORMAT,
            written_at: 1_700_000_000_000,
            next_uid: 3,
            services: vec![PersistedService {
                name: "web".into(),
                ports: vec!["tcp/80".into()],
                forwarding: "l2dsr".into(),
                families: vec!["ipv4".into()],
                pool: "public".into(),
                vips: vec![],
                drain_grace_ms: 5_000,
                drain_quiet_ms: 30_000,
                drain_timeout_ms: 600_000,
                next_id: 3,
                removed: false,
                versions: vec![PersistedVersion {
                    id: 2,
                    uid: 2,
                    slot: 1,
                    vips: vec!["203.0.113.2".parse().unwrap()],
                    backends: vec![PersistedBackend {
                        addr: "10.0.1.11".parse().unwrap(),
                        healthy: false,
                    }],
                    state: VersionState::Active,
                    created_at: 1_700_000_000_000,
                    draining_since: None,
                    released_at: None,
                    release_reason: None,
                }],
            }],
            cooldowns: vec![PersistedCooldown {
                vip: "203.0.113.1".parse().unwrap(),
                until: 1_700_000_050_000,
            }],
        }
    }

    #[test]
    fn missing_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("state.json")).unwrap().is_none());
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample()).unwrap();
        let mut second = sample();
        second.next_uid = 4;
        save(&path, &second).unwrap();
        assert_eq!(load(&path).unwrap(), Some(second));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"format\": 1, \"next_uid\": ").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"{\"format\": 1, \"next_uid\": ");
    }

    #[test]
    fn other_format_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"format\": 99}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, StateError::Format { found: 99, .. }), "{err}");
    }

    #[test]
    fn unreadable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Read { .. }), "{err}");
    }
}
