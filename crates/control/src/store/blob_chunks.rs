//! App files in the database (PostgreSQL): each stored file also goes into `blob_chunks`,
//! 1 MiB a row, so a control-plane node that did not take the upload can write it to its
//! own disk when a gateway asks for it. On SQLite, the one node's disk is the store.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Backend, Store};
use crate::error::Error;

/// Bytes per row.
const CHUNK: usize = 1 << 20;

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("an app file: {e}"))
}

impl Store {
    /// On PostgreSQL, copies the file stored at `path` under `hash` into the database
    /// (nothing when it is there already).
    pub async fn copy_blob_in(&self, hash: &str, path: &Path) -> Result<(), Error> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let there: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blob_chunks WHERE hash = $1")
            .bind(hash)
            .fetch_one(&self.pool)
            .await?;
        if there > 0 {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut tx = self.pool.begin().await?;
        let mut n: i64 = 0;
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(io)?;
            let last = buf.len() < CHUNK;
            // An empty file is one empty chunk; a file of whole chunks ends without one.
            if !buf.is_empty() || n == 0 {
                sqlx::query(
                    "INSERT INTO blob_chunks (hash, n, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash, n) DO NOTHING",
                )
                .bind(hash)
                .bind(n)
                .bind(buf)
                .execute(&mut *tx)
                .await?;
            }
            n += 1;
            if last {
                break;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// On PostgreSQL, writes the file the database holds under `hash` to `path`, checking
    /// its hash; false when the database does not hold it (and always on SQLite).
    pub async fn copy_blob_out(&self, hash: &str, path: &Path) -> Result<bool, Error> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blob_chunks WHERE hash = $1")
            .bind(hash)
            .fetch_one(&self.pool)
            .await?;
        if chunks == 0 {
            return Ok(false);
        }
        let dir = path
            .parent()
            .ok_or_else(|| Error::Internal("an app file's path has no folder".into()))?;
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = dir.join(format!(".{hash}.part"));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut hasher = Sha256::new();
            for n in 0..chunks {
                let data: Vec<u8> =
                    sqlx::query_scalar("SELECT data FROM blob_chunks WHERE hash = $1 AND n = $2")
                        .bind(hash)
                        .bind(n)
                        .fetch_one(&self.pool)
                        .await?;
                hasher.update(&data);
                file.write_all(&data).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
            let got: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if got != hash {
                return Err(Error::Internal(format!(
                    "the database's copy of app file {hash} hashes to {got}"
                )));
            }
            tokio::fs::rename(&tmp, path).await.map_err(io)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        written.map(|()| true)
    }
}
