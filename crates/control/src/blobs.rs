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
        let io = |e: std::io::Error| Error::Internal(format!("cannot store a file: {e}"));
        let tmp_dir = self.dir.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(io)?;
        let tmp = tmp_dir.join(format!("{hash}.{:016x}", fastrand_u64()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    Error::BadRequest(format!("the upload broke off: {e}"))
                })?;
                size += chunk.len() as u64;
                if size > MAX_FILE {
                    return Err(Error::PayloadTooLarge(format!(
                        "a file may be at most {} MiB",
                        MAX_FILE >> 20
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
            let got = hex(&hasher.finalize());
            if got != hash {
                return Err(Error::BadRequest(format!(
                    "the file's SHA-256 is {got}, not {hash}: it was changed or cut short on the way"
                )));
            }
            let path = self.path(hash);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io)?;
            }
            tokio::fs::rename(&tmp, &path).await.map_err(io)?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Removes files (missing ones are fine).
    pub async fn remove(&self, hashes: &[String]) {
        for h in hashes {
            let _ = tokio::fs::remove_file(self.path(h)).await;
        }
    }
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
