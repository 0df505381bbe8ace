//! `portico apps ...`: hosted apps from the command line. Uploading a folder sends only the
//! files the control plane does not have yet (content-addressed), with a progress bar.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::cli::{Client, Output, cell, names, wait_for};

/// `portico apps ...`
#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// List apps.
    List,
    /// Create an app.
    Create {
        /// URL-safe name (its path on a gateway's apps host).
        slug: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Single-page app: unknown paths get index.html.
        #[arg(long)]
        spa: bool,
        /// The page answered with 404 (e.g. 404.html).
        #[arg(long)]
        not_found: Option<String>,
        /// Versions kept besides deployed and published ones.
        #[arg(long, default_value_t = 10)]
        keep_versions: u32,
    },
    /// Show one app.
    Get {
        /// Slug.
        slug: String,
    },
    /// Delete an app deployed nowhere (its versions and files too).
    Delete {
        /// Slug.
        slug: String,
    },
    /// Upload a folder as a new (draft) version; with --gateway, deploy it too.
    Upload(Box<UploadArgs>),
    /// Run a version on gateways: `portico apps deploy SLUG VERSION --gateway G`.
    Deploy(Box<DeployArgs>),
    /// Mark a version published.
    Publish {
        /// Slug.
        slug: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        number: u32,
    },
    /// An app's versions: state, size, where each runs.
    Versions {
        /// Slug.
        slug: String,
    },
    /// Old name of `apps deploy SLUG VERSION` (kept for one release).
    #[command(hide = true)]
    Release {
        /// Slug.
        slug: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        number: u32,
        /// Gateways (repeat or comma-separated).
        #[arg(long = "gateway", required = true)]
        gateways: Vec<String>,
        /// Serve it on this domain instead of the gateway's apps host.
        #[arg(long)]
        host: Option<String>,
        /// Wait until every node serves it (seconds).
        #[arg(long, num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
    },
    /// Switch a gateway back to the version it ran before.
    Rollback {
        /// Slug.
        slug: String,
        /// The gateway.
        #[arg(long)]
        gateway: String,
        /// The domain, when it runs on one.
        #[arg(long)]
        host: Option<String>,
        /// Wait until every node serves it (seconds).
        #[arg(long, num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
    },
    /// Stop serving an app on a gateway.
    Undeploy {
        /// Slug.
        slug: String,
        /// The gateway.
        #[arg(long)]
        gateway: String,
        /// The domain, when it runs on one.
        #[arg(long)]
        host: Option<String>,
    },
    /// Which version runs on which gateway and node.
    Status {
        /// Slug.
        slug: String,
    },
}

/// `portico apps upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The folder, .tar.gz or .zip to upload (its contents become the app's root).
    path: PathBuf,
    /// The app.
    #[arg(long)]
    app: String,
    /// What changed.
    #[arg(long, default_value = "")]
    note: String,
    /// Also run the new version on gateways.
    #[command(flatten)]
    on: RunOn,
}

/// Where and how a version runs: what `apps upload` and `apps deploy` share.
#[derive(Debug, clap::Args)]
pub struct RunOn {
    /// Gateways (repeat or comma-separated).
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// Serve it on this domain instead of the gateway's apps host.
    #[arg(long)]
    host: Option<String>,
    /// Wait until every node serves it (seconds).
    #[arg(long, num_args = 0..=1, default_missing_value = "60")]
    wait: Option<u64>,
    /// Let a draft version run on production gateways.
    #[arg(long)]
    allow_draft: bool,
}

/// `portico apps deploy SLUG VERSION --gateway G` (and, for one release, the old
/// `portico apps deploy DIR --app SLUG`, which uploads).
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The app's slug (the old form: the folder to upload).
    target: String,
    /// The version to run.
    #[arg(value_name = "VERSION")]
    number: Option<u32>,
    /// The old form's app: `apps deploy DIR --app SLUG` is now `apps upload`.
    #[arg(long, hide = true)]
    app: Option<String>,
    /// The old form's note.
    #[arg(long, hide = true, default_value = "")]
    note: String,
    /// Where it runs.
    #[command(flatten)]
    on: RunOn,
}

/// Runs an apps command.
pub async fn run(c: &Client, cmd: AppsCommand) -> anyhow::Result<()> {
    use AppsCommand as A;
    match cmd {
        A::List => c.print(
            &c.get_all("/api/v1/apps").await?,
            &[
                ("SLUG", "/spec/slug"),
                ("NAME", "/spec/name"),
                ("SPA", "/spec/spa"),
                ("UPDATED", "/updated_at"),
            ],
            Some("items"),
        ),
        A::Create {
            slug,
            name,
            spa,
            not_found,
            keep_versions,
        } => {
            let mut spec =
                json!({"slug": slug, "name": name, "spa": spa, "keep_versions": keep_versions});
            if let Some(nf) = not_found {
                spec["not_found"] = json!(nf);
            }
            c.call(Method::POST, "/api/v1/apps", Some(&spec), None)
                .await?;
            c.done(format!(
                "Created app `{slug}`. Upload a version: portico apps upload ./dist --app {slug}"
            ));
        }
        A::Get { slug } => c.print(&c.get(&format!("/api/v1/apps/{slug}")).await?, &[], None),
        A::Delete { slug } => {
            c.call(Method::DELETE, &format!("/api/v1/apps/{slug}"), None, None)
                .await?;
            c.done(format!("Deleted app `{slug}`."));
        }
        A::Upload(a) => upload(c, *a).await?,
        A::Deploy(a) => match (a.app, a.number) {
            (Some(app), None) => {
                eprintln!(
                    "warning: `portico apps deploy DIR --app SLUG` is now `portico apps upload DIR --app SLUG` (and `portico apps deploy SLUG VERSION --gateway G` runs a version); the old form goes away in the next release"
                );
                let args = UploadArgs {
                    path: PathBuf::from(a.target),
                    app,
                    note: a.note,
                    on: a.on,
                };
                upload(c, args).await?;
            }
            (Some(_), Some(_)) => {
                bail!(
                    "give either SLUG VERSION (deploy a version) or DIR --app SLUG (upload; now `portico apps upload`), not both"
                )
            }
            (None, None) => bail!(
                "which version of `{}`? `portico apps deploy {} VERSION --gateway G` (see `portico apps versions {}`); to upload a folder: `portico apps upload DIR --app SLUG`",
                a.target,
                a.target,
                a.target
            ),
            (None, Some(version)) => {
                if a.on.gateways.is_empty() {
                    bail!(
                        "name the gateways to run it on: --gateway G (repeat or comma-separated)"
                    );
                }
                release(c, &a.target, version, &a.on).await?;
            }
        },
        A::Publish { slug, number } => {
            c.call(
                Method::POST,
                &format!("/api/v1/apps/{slug}/versions/{number}/publish"),
                None,
                None,
            )
            .await?;
            c.done(format!("Version {number} of `{slug}` is published."));
        }
        A::Versions { slug } => c.print(
            &c.get_all(&format!("/api/v1/apps/{slug}/versions")).await?,
            &[
                ("VERSION", "/number"),
                ("STATE", "/state"),
                ("FILES", "/file_count"),
                ("BYTES", "/size"),
                ("CREATED", "/created_at"),
                ("DEPLOYED ON", "/deployed_on"),
                ("NOTE", "/note"),
            ],
            Some("items"),
        ),
        A::Release {
            slug,
            number,
            gateways,
            host,
            wait,
        } => {
            eprintln!(
                "warning: `portico apps release` is now `portico apps deploy {slug} {number} --gateway ...`; the old name goes away in the next release"
            );
            let on = RunOn {
                gateways,
                host,
                wait,
                allow_draft: false,
            };
            release(c, &slug, number, &on).await?;
        }
        A::Rollback {
            slug,
            gateway,
            host,
            wait,
        } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!(
                        "/api/v1/apps/{slug}/deployments/{gateway}/rollback{}",
                        host_query(host.as_deref())
                    ),
                    None,
                    None,
                )
                .await?;
            crate::cli::out!(
                "`{slug}` on {gateway} is back to version {}.",
                cell(&v, "/deployment/version")
            );
            if let Some(s) = wait {
                wait_for(c, &v, Duration::from_secs(s)).await?;
            }
        }
        A::Undeploy {
            slug,
            gateway,
            host,
        } => {
            c.call(
                Method::DELETE,
                &format!(
                    "/api/v1/apps/{slug}/deployments/{gateway}{}",
                    host_query(host.as_deref())
                ),
                None,
                None,
            )
            .await?;
            c.done(format!("`{slug}` no longer runs on {gateway}."));
        }
        A::Status { slug } => status(c, &slug).await?,
    }
    Ok(())
}

fn host_query(host: Option<&str>) -> String {
    host.map(|h| format!("?host={h}")).unwrap_or_default()
}

/// A file to upload: where it comes from (for messages), its content when it came out of
/// an archive, its hash and size.
struct Local {
    disk: PathBuf,
    bytes: Option<Vec<u8>>,
    hash: String,
    size: u64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files of a folder, a `.tar.gz`/`.tgz` or a `.zip`.
fn collect(path: &Path) -> anyhow::Result<BTreeMap<String, Local>> {
    use portico_control::archive;
    let Some(format) = archive::Format::of(&path.to_string_lossy()) else {
        return walk(path);
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    archive::each_file(
        std::io::BufReader::new(file),
        format,
        &archive::Limits::default(),
        |rel, content| {
            let mut bytes = Vec::new();
            let n = content.read_to_end(&mut bytes)?;
            entries.push((rel.to_owned(), bytes));
            Ok(n as u64)
        },
    )
    .with_context(|| path.display().to_string())?;
    let mut paths: Vec<String> = entries.iter().map(|(p, _)| p.clone()).collect();
    archive::app_paths(&mut paths).with_context(|| path.display().to_string())?;
    let mut out = BTreeMap::new();
    for (rel, (_, bytes)) in paths.into_iter().zip(entries) {
        out.insert(
            rel.clone(),
            Local {
                disk: path.join(&rel),
                hash: sha256_hex(&bytes),
                size: bytes.len() as u64,
                bytes: Some(bytes),
            },
        );
    }
    Ok(out)
}

/// Every regular file under `root`, by `/`-separated relative path.
fn walk(root: &Path) -> anyhow::Result<BTreeMap<String, Local>> {
    let meta =
        std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a folder, a .tar.gz or a .zip: give the built app (its index.html at the top)",
            root.display()
        );
    }
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                // Symbolic links and other special files are not part of an app.
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(problem) = portico_model::app::path_problem(&rel) {
                bail!("{}: {problem}", path.display());
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            out.insert(
                rel,
                Local {
                    disk: path,
                    hash: sha256_hex(&bytes),
                    size: bytes.len() as u64,
                    bytes: None,
                },
            );
        }
    }
    if out.is_empty() {
        bail!("{} has no files", root.display());
    }
    Ok(out)
}

async fn upload(c: &Client, a: UploadArgs) -> anyhow::Result<()> {
    let files = collect(&a.path)?;
    let hashes: Vec<&str> = files.values().map(|f| f.hash.as_str()).collect();
    let (_, missing) = c
        .call(
            Method::POST,
            "/api/v1/blobs/missing",
            Some(&json!({ "hashes": hashes })),
            None,
        )
        .await?;
    let missing: std::collections::HashSet<String> = missing["missing"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // One upload per distinct content.
    let mut to_send: BTreeMap<&str, &Local> = BTreeMap::new();
    for f in files.values() {
        if missing.contains(&f.hash) {
            to_send.insert(&f.hash, f);
        }
    }
    let bytes: u64 = to_send.values().map(|f| f.size).sum();
    let bar = indicatif::ProgressBar::new(bytes);
    if c.output == Output::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} uploading {pos:>7}/{len:7} bytes [{bar:30}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for (hash, f) in &to_send {
        bar.set_message(f.disk.display().to_string());
        let body = match &f.bytes {
            Some(b) => b.clone(),
            None => std::fs::read(&f.disk)
                .with_context(|| format!("cannot read {}", f.disk.display()))?,
        };
        c.put_bytes(&format!("/api/v1/blobs/{hash}"), body).await?;
        bar.inc(f.size);
    }
    bar.finish_and_clear();
    let manifest: BTreeMap<&str, Value> = files
        .iter()
        .map(|(p, f)| (p.as_str(), json!({"hash": f.hash, "size": f.size})))
        .collect();
    let (_, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/apps/{}/versions", a.app),
            Some(&json!({"files": manifest, "note": a.note})),
            None,
        )
        .await?;
    let number = v["number"].as_u64().unwrap_or_default() as u32;
    if c.output == Output::Json {
        c.print(
            &json!({"version": v, "uploaded_files": to_send.len(), "uploaded_bytes": bytes}),
            &[],
            None,
        );
    } else {
        crate::cli::out!(
            "Version {number} of `{}`: {} files, {} uploaded ({bytes} bytes), {} already there.",
            a.app,
            files.len(),
            to_send.len(),
            files.len() - to_send.len()
        );
    }
    if !a.on.gateways.is_empty() {
        release(c, &a.app, number, &a.on).await?;
    }
    Ok(())
}

async fn release(c: &Client, slug: &str, version: u32, on: &RunOn) -> anyhow::Result<()> {
    let (host, wait, allow_draft) = (on.host.as_deref(), on.wait, on.allow_draft);
    let gateways = names(&on.gateways);
    let mut body = json!({"version": version, "gateways": gateways, "allow_draft": allow_draft});
    if let Some(h) = host {
        body["host"] = json!(h);
    }
    let (_, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/apps/{slug}/deployments"),
            Some(&body),
            None,
        )
        .await?;
    if c.output != Output::Json {
        crate::cli::out!(
            "Version {version} of `{slug}` runs on {}{}.",
            gateways.join(", "),
            host.map(|h| format!(" at {h}")).unwrap_or_default()
        );
    }
    let mut out = v;
    if let Some(s) = wait {
        out["wait"] = wait_for(c, &out, Duration::from_secs(s)).await?;
    }
    if c.output == Output::Json {
        c.print(&out, &[], None);
    }
    Ok(())
}

async fn status(c: &Client, slug: &str) -> anyhow::Result<()> {
    let v = c
        .get_all(&format!("/api/v1/apps/{slug}/deployments"))
        .await?;
    if c.output == Output::Json {
        c.print(&v, &[], None);
        return Ok(());
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        crate::cli::out!("`{slug}` runs nowhere yet.");
        return Ok(());
    }
    let mut rows = Vec::new();
    for d in &items {
        let nodes = d["nodes"].as_array().cloned().unwrap_or_default();
        let node_text = if nodes.is_empty() {
            "-".to_owned()
        } else {
            let current = d["snapshot_version"].as_u64();
            nodes
                .iter()
                .map(|n| {
                    let applied = n["applied_version"].as_u64();
                    if applied.is_some() && applied == current {
                        format!("{} (serving it)", cell(n, "/node_id"))
                    } else {
                        format!(
                            "{} (behind: snapshot {} of {})",
                            cell(n, "/node_id"),
                            cell(n, "/applied_version"),
                            current.unwrap_or_default()
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(json!({
            "gateway": d["gateway"], "host": d["host"], "version": d["version"],
            "state": if d["draft"] == true { "draft" } else { "published" },
            "previous": d["previous"], "nodes": node_text,
        }));
    }
    c.print(
        &json!({ "items": rows }),
        &[
            ("GATEWAY", "/gateway"),
            ("HOST", "/host"),
            ("VERSION", "/version"),
            ("STATE", "/state"),
            ("PREVIOUS", "/previous"),
            ("NODES", "/nodes"),
        ],
        Some("items"),
    );
    Ok(())
}
