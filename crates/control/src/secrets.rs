//! Secrets: generating tokens, hashing them for lookup, and sealing the JWT secrets the
//! control plane must be able to use again (AES-256-GCM under a key in the data directory).

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A new random token: `prefix` and 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // The system RNG does not fail on Linux once the kernel is seeded.
    let _ = SystemRandom::new().fill(&mut bytes);
    format!("{prefix}{}", B64.encode(bytes))
}

/// The lookup hash of a token: `sha256` hex. Tokens are 256-bit random, so a fast hash is
/// enough (no password-style KDF needed).
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals and opens secrets with the data directory's key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads `secret.key` from `dir`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        Self::load_or_create_at(&dir.join("secret.key"))
    }

    /// Loads the key in the file at `path` (32 bytes), creating it (mode 0600) when missing.
    pub fn load_or_create_at(path: &Path) -> Result<Self, Error> {
        let path = path.to_path_buf();
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| Error::Internal("no randomness for the secret key".into()))?;
                write_private(&path, &key)?;
                key.to_vec()
            }
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| Error::Internal(format!("{} is not a 32-byte key", path.display())))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plain`: base64url of nonce and ciphertext.
    pub fn seal(&self, plain: &str) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("no randomness for a nonce".into()))?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| Error::Internal("cannot seal a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) made.
    pub fn open(&self, sealed: &str) -> Result<String, Error> {
        let raw = B64
            .decode(sealed)
            .map_err(|_| Error::Internal("a sealed secret is not base64".into()))?;
        if raw.len() < NONCE_LEN {
            return Err(Error::Internal("a sealed secret is truncated".into()));
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Internal("bad nonce".into()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| {
                Error::Internal(
                    "a sealed secret does not open with secret.key (was the key replaced?)".into(),
                )
            })?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| Error::Internal("a sealed secret is not text".into()))
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Creates `dir` (and its missing parents) readable by the owner only, and warns when an
/// existing one is open to others: it holds secrets that mode bits must keep to the owner.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::Internal(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        return Ok(());
    }
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = %format!("{mode:04o}"),
                "the data directory is open to other users: it holds the secret key and the database; run `chmod 700 {}`",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 when it does not exist, and takes an existing one
/// back to 0600.
pub fn private_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let err = |e: std::io::Error| Error::Internal(format!("cannot create {}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_again_and_tokens_differ() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Sealer::load_or_create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let sealed = s.seal("top secret").unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.contains("top secret"));
        let again = Sealer::load_or_create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.open(&sealed).unwrap_or_else(|e| panic!("{e}")),
            "top secret"
        );
        assert_ne!(generate("t_"), generate("t_"));
        assert_eq!(hash("a").len(), 64);
    }
}
