//! An app's page in the console: its versions (upload one as a folder or an archive,
//! publish a draft), where each version runs (a draft on one gateway and the published
//! version on another, two gateways behind a load balancer for blue-green), deploy to
//! several gateways at once, roll back or undeploy one, and every node's progress live.
//! Each write is the store call the API makes, checked as the API checks it.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portico_model::AppFile;

use super::console::{GatewayRow, gateway_row, nodes_summary};
use super::{Fields, Nav, St, Viewer, error_page, page};
use crate::access::{Action, KindId};
use crate::archive::{self, ArchiveError};
use crate::error::Error;
use crate::page::Page;
use portico_model::FieldError;

/// The app pages' routes (its list and settings editor are the kind pages').
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/console/apps/{key}", get(app))
        .route("/console/apps/{key}/deployments", get(live_rows))
        .route(
            "/console/apps/{key}/versions",
            // A whole app in one form: bounded by what one version may hold, not the
            // API's 2 MiB for JSON.
            post(upload).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/console/apps/{key}/{action}", post(act))
}

/// Largest upload form: the files of a version plus the form's own bytes.
const UPLOAD_LIMIT: usize = archive::MAX_TOTAL as usize + (1 << 20);

/// A version in the table.
struct VersionRow {
    number: u32,
    state: &'static str,
    note: String,
    files: i64,
    size: String,
    created: String,
    deployed_on: String,
}

/// Where a version runs, and how the gateway's nodes stand.
struct DeploymentRow {
    /// `gateway` or `gateway host`: what the live refresh matches rows by.
    key: String,
    gateway: String,
    host: String,
    version: u32,
    draft: bool,
    previous: Option<u32>,
    nodes: String,
    /// Where people reach it: `host/`, `apps host/slug/`, or any host at `/slug/`.
    at: String,
}

#[derive(Template)]
#[template(path = "console/app.html")]
struct AppPage {
    nav: Nav,
    slug: String,
    name: String,
    description: String,
    spa: bool,
    can_write: bool,
    versions: Vec<VersionRow>,
    gateways: Vec<GatewayRow>,
    deployments: Vec<DeploymentRow>,
    notice: Option<String>,
    error: Option<String>,
}

/// Bytes as people read them.
fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    match bytes {
        ..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        _ => format!("{:.1} MiB", b / 1_048_576.0),
    }
}

async fn deployment_rows(
    st: &crate::ControlPlane,
    slug: &str,
) -> Result<Vec<DeploymentRow>, Error> {
    let mut out = Vec::new();
    for d in st.store.app_deployments(slug).await? {
        let g = st.store.gateway(&d.gateway).await?;
        let host = d.host.clone().unwrap_or_default();
        let at = match (&d.host, g.spec.effective_apps_host()) {
            (Some(h), _) => format!("{h}/"),
            (None, Some(apps)) => format!("{apps}/{slug}/"),
            (None, None) => format!("any host, /{slug}/"),
        };
        out.push(DeploymentRow {
            key: if host.is_empty() {
                d.gateway.clone()
            } else {
                format!("{} {host}", d.gateway)
            },
            nodes: nodes_summary(st, &d.gateway).await?,
            gateway: d.gateway,
            host,
            version: d.version,
            draft: d.draft,
            previous: d.previous,
            at,
        });
    }
    Ok(out)
}

async fn app_page(
    st: &crate::ControlPlane,
    v: &Viewer,
    slug: &str,
    notice: Option<String>,
    failed: Option<Error>,
) -> Response {
    let status = failed.as_ref().map_or(StatusCode::OK, Error::status);
    let built = async {
        crate::access::authorize(v.caller.as_ref(), KindId::App, Action::Read, None)?;
        let a = st.store.app(slug).await?;
        let versions = st.store.app_versions(slug).await?;
        let can_write = v.may(KindId::App, Action::Write);
        let gateways = if can_write {
            st.store.gateways(&Page::all()).await?
        } else {
            Vec::new()
        };
        Ok::<_, Error>(AppPage {
            nav: v.nav(),
            slug: a.spec.slug.clone(),
            name: a.spec.name.clone(),
            description: a.spec.description.clone(),
            spa: a.spec.spa,
            can_write,
            versions: versions
                .into_iter()
                .map(|r| VersionRow {
                    number: r.number,
                    state: r.state,
                    note: r.note,
                    files: r.file_count,
                    size: size(r.size),
                    created: super::lists::utc(r.created_at),
                    deployed_on: r.deployed_on.join(", "),
                })
                .collect(),
            gateways: gateways.iter().map(gateway_row).collect(),
            deployments: deployment_rows(st, slug).await?,
            notice,
            error: failed.map(super::error_text),
        })
    }
    .await;
    match built {
        Ok(p) => page(status, &p),
        Err(e) => error_page(v.nav(), e),
    }
}

async fn app(State(st): St, v: Viewer, Path(slug): Path<String>) -> Response {
    app_page(&st, &v, &slug, None, None).await
}

/// The deployments table's live rows.
async fn live_rows(State(st): St, headers: HeaderMap, Path(slug): Path<String>) -> Response {
    let found = async {
        let v = Viewer::of(&st, &headers, false).await?;
        crate::access::authorize(v.caller.as_ref(), KindId::App, Action::Read, None)?;
        deployment_rows(&st, &slug).await
    }
    .await;
    match found {
        Ok(rows) => axum::Json(serde_json::json!({
            "deployments": rows.iter().map(|d| serde_json::json!({
                "key": d.key, "version": d.version, "nodes": d.nodes,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every other write on the app's page (`publish`, `deploy`, `undeploy`, `rollback`).
async fn act(
    State(st): St,
    v: Viewer,
    Path((slug, what)): Path<(String, String)>,
    f: Fields,
) -> Response {
    if let Err(r) = v.require_form(KindId::App, Action::Write, &f) {
        return *r;
    }
    let st = &*st;
    let slug = slug.as_str();
    let host = Some(f.get("host").trim()).filter(|h| !h.is_empty());
    let on = |g: &str| match host {
        Some(h) => format!("{g} ({h})"),
        None => g.to_owned(),
    };
    let version = || {
        f.get("version")
            .parse::<u32>()
            .map_err(|_| Error::BadRequest("choose a version".into()))
    };
    let done: Result<String, Error> = v
        .act(async {
            match what.as_str() {
                "publish" => {
                    let n = version()?;
                    st.store.publish_app_version(slug, n).await?;
                    Ok(format!("Version {n} is published."))
                }
                "deploy" => {
                    let n = version()?;
                    let gateways: Vec<String> = f.all("gateway").map(str::to_owned).collect();
                    if gateways.is_empty() {
                        return Err(Error::BadRequest(
                            "choose at least one gateway to deploy to".into(),
                        ));
                    }
                    if let Some(h) = host
                        && let Err(m) = portico_model::validate::check_host(h, false)
                    {
                        return Err(Error::Invalid(vec![FieldError::new("host", m)]));
                    }
                    let allow_draft = f.get("allow_draft") == "yes";
                    st.store
                        .deploy_app(slug, n, &gateways, host, allow_draft)
                        .await?;
                    Ok(format!(
                        "Version {n} deployed to {}: its nodes follow below.",
                        gateways
                            .iter()
                            .map(|g| on(g))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                "undeploy" => {
                    let g = f.get("gateway");
                    st.store.undeploy_app(slug, g, host).await?;
                    Ok(format!("Undeployed from {}.", on(g)))
                }
                "rollback" => {
                    let g = f.get("gateway");
                    let (d, _) = st.store.rollback_app(slug, g, host).await?;
                    Ok(format!("{} is back on version {}.", on(g), d.version))
                }
                other => Err(Error::NotFound(format!(
                    "no action `{other}` on an app page"
                ))),
            }
        })
        .await;
    match done {
        Ok(notice) => app_page(st, &v, slug, Some(notice), None).await,
        Err(e) => app_page(st, &v, slug, None, Some(e)).await,
    }
}

/// A new version from the upload form: the files of a chosen folder (their paths in the
/// `paths` field, one per line, when the page's script could give them; else the names
/// the browser sent) or one `.tar.gz`/`.zip`, each stored by its hash as it streams in.
/// The CSRF token comes first in the form and is checked before any file is kept.
async fn upload(
    State(st): St,
    v: Viewer,
    Path(slug): Path<String>,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Err(r) = v.require(KindId::App, Action::Write) {
        return *r;
    }
    let received = async {
        let form = form.map_err(|e| Error::BadRequest(format!("not an upload form: {e}")))?;
        receive(&st, &v, form).await
    }
    .await;
    let made = match received {
        Ok(Upload { files, note }) => {
            let count = files.len();
            let bytes: u64 = files.values().map(|f| f.size).sum();
            v.act(st.store.create_app_version(&slug, &files, &note))
                .await
                .map(|(version, orphans)| (version, orphans, count, bytes))
        }
        Err(e) => Err(e),
    };
    match made {
        Ok((version, orphans, count, bytes)) => {
            st.sweep_files(orphans).await;
            let notice = format!(
                "Version {} uploaded as a draft: {count} files, {}.",
                version.number,
                size(bytes as i64)
            );
            app_page(&st, &v, &slug, Some(notice), None).await
        }
        Err(e) => app_page(&st, &v, &slug, None, Some(e)).await,
    }
}

/// What an upload form carried.
struct Upload {
    files: BTreeMap<String, AppFile>,
    note: String,
}

async fn receive(
    st: &crate::ControlPlane,
    v: &Viewer,
    mut form: Multipart,
) -> Result<Upload, Error> {
    let broken = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(format!(
                "an upload may be at most {} MiB",
                archive::MAX_TOTAL >> 20
            ))
        } else {
            Error::BadRequest(format!("the upload broke off: {e}"))
        }
    };
    let mut csrf_ok = false;
    let mut note = String::new();
    let mut given_paths: Vec<String> = Vec::new();
    // (name the browser sent, stored file) for a folder's files, in the order sent.
    let mut sent: Vec<(String, AppFile)> = Vec::new();
    let mut from_archive: Option<Vec<(String, AppFile)>> = None;
    while let Some(field) = form.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "csrf" {
            v.check_csrf(&text(field, 256).await?)?;
            csrf_ok = true;
            continue;
        }
        if !csrf_ok {
            return Err(super::stale_form());
        }
        match name.as_str() {
            "note" => note = text(field, 64 * 1024).await?,
            "paths" => {
                // A path per file, each at most MAX_PATH bytes.
                let most = archive::MAX_FILES * (portico_model::app::MAX_PATH + 1);
                given_paths = text(field, most)
                    .await?
                    .lines()
                    .map(str::to_owned)
                    .filter(|l| !l.is_empty())
                    .collect();
            }
            "files" => {
                let file_name = field.file_name().unwrap_or_default().to_owned();
                if file_name.is_empty() {
                    // No folder chosen: the browser sends one empty, nameless part.
                    continue;
                }
                if sent.len() >= archive::MAX_FILES {
                    return Err(Error::PayloadTooLarge(format!(
                        "an app has at most {} files",
                        archive::MAX_FILES
                    )));
                }
                let (hash, size) = st.blobs.put_any(Box::pin(field)).await?;
                st.keep_blob(&hash, size).await?;
                sent.push((file_name, AppFile { hash, size }));
            }
            "archive" => {
                let file_name = field.file_name().unwrap_or_default().to_owned();
                if file_name.is_empty() {
                    continue;
                }
                from_archive = Some(unpack(st, &file_name, field).await?);
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "the upload form has no field `{other}`"
                )));
            }
        }
    }
    if !csrf_ok {
        return Err(super::stale_form());
    }
    let listed = match (sent.is_empty(), from_archive) {
        (true, None) => {
            return Err(Error::Invalid(vec![FieldError::new(
                "files",
                "choose a folder or an archive to upload",
            )]));
        }
        (false, Some(_)) => {
            return Err(Error::Invalid(vec![FieldError::new(
                "files",
                "upload a folder or an archive, not both",
            )]));
        }
        (true, Some(files)) => files,
        (false, None) => {
            // The page's script lists each file's path inside the folder; without it, the
            // names as the browser sent them.
            if given_paths.len() == sent.len() {
                for ((name, _), path) in sent.iter_mut().zip(given_paths) {
                    *name = path;
                }
            }
            sent
        }
    };
    let mut paths: Vec<String> = listed.iter().map(|(p, _)| p.clone()).collect();
    archive::app_paths(&mut paths).map_err(invalid)?;
    let mut files = BTreeMap::new();
    for (path, (_, file)) in paths.into_iter().zip(listed) {
        if files.insert(path.clone(), file).is_some() {
            return Err(Error::Invalid(vec![FieldError::new(
                "files",
                format!("two files are named `{path}`"),
            )]));
        }
    }
    Ok(Upload { files, note })
}

/// A text field of the upload form, read only up to `most` bytes (a form field is no
/// place for a gigabyte).
async fn text(mut field: Field<'_>, most: usize) -> Result<String, Error> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::BadRequest(format!("the upload broke off: {e}")))?
    {
        if bytes.len() + chunk.len() > most {
            return Err(Error::PayloadTooLarge(format!(
                "the form's `{name}` may be at most {most} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::BadRequest(format!("the form's `{name}` is not UTF-8 text")))
}

fn invalid(e: ArchiveError) -> Error {
    match e {
        ArchiveError::TooLarge(m) => Error::PayloadTooLarge(m),
        other => Error::Invalid(vec![FieldError::new("files", other.to_string())]),
    }
}

/// Stores an uploaded archive's files by hash: the archive goes to a temporary file as it
/// streams in, then is read on a blocking thread within [`archive::Limits`].
async fn unpack(
    st: &crate::ControlPlane,
    file_name: &str,
    field: Field<'_>,
) -> Result<Vec<(String, AppFile)>, Error> {
    let Some(format) = archive::Format::of(file_name) else {
        return Err(Error::Invalid(vec![FieldError::new(
            "archive",
            format!("`{file_name}` is not a .tar.gz, .tgz or .zip"),
        )]));
    };
    // The archive itself is kept only while it is read.
    let spooled = st.blobs.spool(Box::pin(field)).await?;
    let blobs = st.blobs.clone();
    let read = tokio::task::spawn_blocking(move || {
        let file = match std::fs::File::open(&spooled.path) {
            Ok(f) => f,
            Err(e) => {
                let e = Error::Internal(format!("an uploaded archive went missing: {e}"));
                return (Vec::new(), Err(e));
            }
        };
        let mut out = Vec::new();
        let mut failed = None;
        let walked = archive::each_file(
            std::io::BufReader::new(file),
            format,
            &archive::Limits::default(),
            |p, content| match blobs.put_read(content) {
                Ok((hash, size)) => {
                    out.push((p.to_owned(), AppFile { hash, size }));
                    Ok(size)
                }
                Err(e) => {
                    let m = e.to_string();
                    failed = Some(e);
                    Err(std::io::Error::other(m))
                }
            },
        );
        drop(spooled);
        let walked = match (walked, failed) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(invalid(e)),
            (Ok(()), None) => Ok(()),
        };
        (out, walked)
    })
    .await
    .map_err(|e| Error::Internal(format!("reading an archive stopped: {e}")))?;
    let (files, walked) = read;
    // Recorded even when a later entry failed: unused files are swept like any other.
    for (_, f) in &files {
        st.keep_blob(&f.hash, f.size).await?;
    }
    walked.map(|()| files)
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(12), "12 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(3 * 1_048_576 + 524_288), "3.5 MiB");
    }
}
