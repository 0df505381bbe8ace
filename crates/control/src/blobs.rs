//! App files on the control plane's disk, by content hash (`<data>/blobs/ab/abcdef...`).
//! An upload is written to a temporary file while it is hashed, and only a file whose
//! SHA-256 is the name it was sent under is kept.

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::error::Error;

/// Largest single file accepted.
pub const MAX_FILE: u64 = 512 * 1024 * 1024;

/// The blob directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Blobs under `<data_dir>/blobs`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("blobs"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file is kept.
    pub fn path(&self, hash: &str) -> PathBuf {
        portico_model::app::blob_path(&self.dir, hash)
    }

    /// Stores a body under `hash`, checking it hashes to that; answers its size.
    pub async fn put(&self, hash: &str, body: axum::body::Body) -> Result<u64, Error> {
        let spooled = self.spool(body.into_data_stream()).await?;
        if spooled.hash != hash {
            return Err(Error::BadRequest(format!(
                "the file's SHA-256 is {}, not {hash}: it was changed or cut short on the way",
                spooled.hash
            )));
        }
        self.keep(&spooled)
    }

    /// Stores a stream whose content is not known ahead (a file of a form's upload);
    /// answers its SHA-256 and size.
    pub async fn put_any<E: std::fmt::Display>(
        &self,
        stream: impl futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    ) -> Result<(String, u64), Error> {
        let spooled = self.spool(stream).await?;
        let size = self.keep(&spooled)?;
        Ok((spooled.hash.clone(), size))
    }

    /// Writes a stream to a temporary file (removed when the answer is dropped, unless
    /// kept), hashing it on the way.
    pub async fn spool<E: std::fmt::Display>(
        &self,
        mut stream: impl futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    ) -> Result<Spooled, Error> {
        let path = self.temp_path()?;
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut spooled = Spooled {
            path,
            hash: String::new(),
            size: 0,
        };
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Error::BadRequest(format!("the upload broke off: {e}")))?;
            spooled.size += chunk.len() as u64;
            if spooled.size > MAX_FILE {
                return Err(too_large());
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        spooled.hash = hex(&hasher.finalize());
        Ok(spooled)
    }

    /// Stores what `content` reads (a file out of an archive, on a blocking thread): at
    /// most [`MAX_FILE`] bytes; answers its SHA-256 and size.
    pub fn put_read(&self, content: &mut dyn std::io::Read) -> Result<(String, u64), Error> {
        use std::io::Write as _;
        let mut spooled = Spooled {
            path: self.temp_path()?,
            hash: String::new(),
            size: 0,
        };
        let mut file = std::fs::File::create(&spooled.path).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = content
                .read(&mut buf)
                .map_err(|e| Error::BadRequest(format!("a file cannot be read: {e}")))?;
            if n == 0 {
                break;
            }
            spooled.size += n as u64;
            if spooled.size > MAX_FILE {
                return Err(too_large());
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        spooled.hash = hex(&hasher.finalize());
        let size = self.keep(&spooled)?;
        Ok((spooled.hash.clone(), size))
    }

    /// A fresh temporary file's path under the blob directory.
    fn temp_path(&self) -> Result<PathBuf, Error> {
        let tmp_dir = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(io)?;
        Ok(tmp_dir.join(format!("upload.{:016x}", fastrand_u64())))
    }

    /// Keeps a spooled file under its hash; answers its size.
    fn keep(&self, spooled: &Spooled) -> Result<u64, Error> {
        let path = self.path(&spooled.hash);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::rename(&spooled.path, &path).map_err(io)?;
        Ok(spooled.size)
    }

    /// Removes files (missing ones are fine).
    pub async fn remove(&self, hashes: &[String]) {
        for h in hashes {
            let _ = tokio::fs::remove_file(self.path(h)).await;
        }
    }
}

/// A stream written to a temporary file: where, its SHA-256 and size. The file is removed
/// when this is dropped, unless it was kept under its hash.
#[derive(Debug)]
pub struct Spooled {
    /// The temporary file.
    pub path: PathBuf,
    /// SHA-256, lower-case hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        // Gone already when it was kept (renamed).
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("cannot store a file: {e}"))
}

fn too_large() -> Error {
    Error::PayloadTooLarge(format!("a file may be at most {} MiB", MAX_FILE >> 20))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fastrand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}
