//! Claims on listening ports across processes. Workers share a port with SO_REUSEPORT, and
//! so may the nodes of one gateway on one machine; but the kernel cannot tell two unrelated
//! gateways apart, and lets them take turns answering each other's requests. A claim is a
//! lock file per port in a runtime directory, naming who holds it: held shared by every
//! process of the same owner, refused to anyone else.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portico_model::PortOwner;

/// A held claim; dropping it (the file closes) releases the port.
#[derive(Debug)]
pub struct Claim {
    _file: File,
}

/// Why a port cannot be claimed.
#[derive(Debug)]
pub enum ClaimError {
    /// Another owner holds it.
    Held(String),
    /// The lock file could not be used.
    Io(std::io::Error),
}

/// Where the lock files live: `$PORTICO_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/portico`,
/// else `/tmp/portico-<uid>` (made owner-only; one user's processes share ports).
pub fn runtime_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let dir = match (
        std::env::var_os("PORTICO_RUNTIME_DIR"),
        std::env::var_os("XDG_RUNTIME_DIR"),
    ) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(d)) => PathBuf::from(d).join("portico"),
        (None, None) => {
            let uid = std::fs::metadata("/proc/self")?.uid();
            std::env::temp_dir().join(format!("portico-{uid}"))
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // In a shared /tmp the name is guessable: use it only when it is our own directory.
    let meta = std::fs::symlink_metadata(&dir)?;
    let uid = std::fs::metadata("/proc/self")?.uid();
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user's (set PORTICO_RUNTIME_DIR)",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

/// Claims `addr`'s port for `owner`: shared with processes of the same owner, refused
/// when another owner holds it.
pub fn claim(addr: SocketAddr, owner: &PortOwner) -> Result<Claim, ClaimError> {
    claim_in(&runtime_dir().map_err(ClaimError::Io)?, addr, owner)
}

/// [`claim`] with the lock files in `dir`.
pub fn claim_in(
    dir: &std::path::Path,
    addr: SocketAddr,
    owner: &PortOwner,
) -> Result<Claim, ClaimError> {
    let path = dir.join(format!("tcp-{}.lock", addr.port()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(ClaimError::Io)?;
    // Someone may hold the lock exclusively for a moment while writing its name.
    for _ in 0..200 {
        match file.try_lock() {
            Ok(()) => {
                // Nobody holds the port: write our name, then share the lock.
                file.set_len(0).map_err(ClaimError::Io)?;
                file.rewind().map_err(ClaimError::Io)?;
                file.write_all(format!("{}\n{}\n", owner.key, owner.label).as_bytes())
                    .map_err(ClaimError::Io)?;
                file.lock_shared().map_err(ClaimError::Io)?;
            }
            Err(std::fs::TryLockError::WouldBlock) => match file.try_lock_shared() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(ClaimError::Io(e)),
            },
            Err(std::fs::TryLockError::Error(e)) => return Err(ClaimError::Io(e)),
        }
        // Held shared now: whoever wrote last owns the port (another process may have
        // written between our write and our shared lock).
        let mut text = String::new();
        file.rewind().map_err(ClaimError::Io)?;
        file.read_to_string(&mut text).map_err(ClaimError::Io)?;
        let mut lines = text.lines();
        let key = lines.next().unwrap_or_default();
        if key == owner.key {
            return Ok(Claim { _file: file });
        }
        let label = lines.next().unwrap_or("another Portico process").to_owned();
        return Err(ClaimError::Held(label));
    }
    Err(ClaimError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{} stayed locked", path.display()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(key: &str) -> PortOwner {
        PortOwner {
            key: key.into(),
            label: format!("gateway {key}"),
        }
    }

    #[test]
    fn one_owner_shares_a_port_and_another_is_refused_until_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let claim = |addr, owner: &PortOwner| claim_in(dir.path(), addr, owner);
        let addr: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        let a1 = claim(addr, &owner("a")).unwrap();
        let a2 = claim(addr, &owner("a")).unwrap();
        match claim(addr, &owner("b")) {
            Err(ClaimError::Held(label)) => assert_eq!(label, "gateway a"),
            other => panic!("{other:?}"),
        }
        // Another port is free.
        claim("127.0.0.1:18081".parse().unwrap(), &owner("b")).unwrap();
        drop((a1, a2));
        let _b = claim(addr, &owner("b")).unwrap();
        assert!(matches!(claim(addr, &owner("a")), Err(ClaimError::Held(_))));
    }
}
