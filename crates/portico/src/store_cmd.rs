//! `portico store export|import`: the whole control-plane state as one file, to move from
//! SQLite to PostgreSQL (or between databases). Run against the store directly, not
//! through the admin API.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use portico_control::store::Store;
use portico_control::store::dump::Dump;

/// Which store a command works on.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The data directory (SQLite's database and the app files are there).
    #[arg(long, env = "PORTICO_DATA_DIR", default_value = "portico-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL instead of the data directory's SQLite database. Given on the
    /// command line only (not from PORTICO_DATABASE): moving a store, which one is read and
    /// which one written is said, never assumed.
    #[arg(long)]
    pub database: Option<String>,
}

impl StoreArgs {
    /// The store, as messages name it (a database URL without its password).
    fn shown(&self) -> String {
        match &self.database {
            Some(url) => format!("PostgreSQL at {}", portico_control::store::redact(url)),
            None => format!("SQLite in {}", self.data_dir.display()),
        }
    }
}

async fn open(s: &StoreArgs) -> anyhow::Result<Store> {
    Ok(match &s.database {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open(&s.data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", s.data_dir.display()))?,
    })
}

/// Writes the whole state to `file` (owner-only: it holds sealed secrets and hashes).
pub async fn export(file: &Path, s: &StoreArgs) -> anyhow::Result<()> {
    let store = open(s).await?;
    let dump = store.export(&s.data_dir.join("blobs")).await?;
    let text = serde_json::to_vec(&dump)?;
    let tmp = file.with_extension("part");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    let rows: usize = dump.tables.values().map(|t| t.rows.len()).sum();
    crate::cli::out!(
        "Exported {rows} rows and {} app files (schema {}) from {} to {}. Secrets stay sealed: \
         give the target the same secret key (--secret-key-file).",
        dump.files.len(),
        dump.schema_version,
        s.shown(),
        file.display()
    );
    Ok(())
}

/// Loads `file` into the store (empty unless `force`); `key_file` (or `<data-dir>/secret.key`
/// when it exists) opens sealed snapshots that `force` has to renumber.
pub async fn import(
    file: &Path,
    s: &StoreArgs,
    force: bool,
    key_file: Option<&Path>,
) -> anyhow::Result<()> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let dump = Dump::read(&text).with_context(|| format!("cannot import {}", file.display()))?;
    // A dump of an older schema is brought up to date first, as the store it came from
    // would be when a newer Portico starts on it.
    let from = dump.schema_version;
    let scratch = std::env::temp_dir().join(format!("portico-upgrade-{}", std::process::id()));
    let dump = dump.upgraded(&scratch).await?;
    if dump.schema_version != from {
        crate::cli::out!(
            "The dump's schema (version {from}) was brought up to version {}.",
            dump.schema_version
        );
    }
    let mut store = open(s).await?;
    let default_key = s.data_dir.join("secret.key");
    let key_file = key_file.or_else(|| default_key.exists().then_some(default_key.as_path()));
    if let Some(key_file) = key_file {
        // An existing key only: a new one would open nothing.
        std::fs::metadata(key_file)
            .with_context(|| format!("cannot read the secret key {}", key_file.display()))?;
        store.sealer = Some(std::sync::Arc::new(
            portico_control::secrets::Sealer::load_or_create_at(key_file)?,
        ));
    }
    let (rows, files) = store
        .import(&dump, &s.data_dir.join("blobs"), force)
        .await?;
    crate::cli::out!(
        "Imported {rows} rows and {files} app files from {} (made by {}) into {}. Start \
         `portico server` on this store with the source's secret key.",
        file.display(),
        dump.made_by,
        s.shown()
    );
    Ok(())
}
