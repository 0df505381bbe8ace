//! `portico import appmesh PATH`: AWS App Mesh specs (what `aws appmesh describe-…` and
//! `list-…` print, or `create-… --cli-input-json` files) made into Portico objects. Prints
//! the plan, writes an apply file, applies to the control plane, or writes a standalone
//! gateway file; the report of what was carried over goes to standard error.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use portico_model::Format;

use crate::cli::{Client, Output};

/// What `portico import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// AWS App Mesh virtual gateways, gateway routes, virtual services, virtual routers and
    /// their routes, and virtual nodes (docs/appmesh.md). Without --out, --apply or
    /// --gateway-file, prints what would be made (nothing changes).
    Appmesh(AppmeshArgs),
}

/// `portico import appmesh` options.
#[derive(Debug, Args)]
pub struct AppmeshArgs {
    /// A JSON file, or a directory of them (read recursively).
    path: PathBuf,
    /// Write the objects as an apply file (TOML; JSON when FILE ends in `.json`).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Apply the objects to the control plane, all in one transaction.
    #[arg(long)]
    apply: bool,
    /// With --apply: the control plane checks everything and changes nothing.
    #[arg(long, requires = "apply")]
    dry_run: bool,
    /// Write one virtual gateway as a standalone gateway file (TOML; JSON for `.json`) that
    /// `portico gateway run --config FILE` serves without a control plane.
    #[arg(long, value_name = "FILE")]
    gateway_file: Option<PathBuf>,
    /// The virtual gateway --gateway-file writes (needed when the input has several).
    #[arg(long, value_name = "NAME")]
    virtual_gateway: Option<String>,
}

/// Runs `portico import …`. `client` makes the control-plane client (only --apply needs one).
pub async fn run(
    cmd: ImportCommand,
    output: Output,
    client: impl FnOnce() -> anyhow::Result<Client>,
) -> anyhow::Result<()> {
    let ImportCommand::Appmesh(a) = cmd;
    let sources = portico_appmesh::read_path(&a.path)?;
    let import = portico_appmesh::import(&sources)?;
    let objects = import.objects.to_json();
    if output == Output::Json {
        crate::cli::out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"objects": objects, "report": import.report})
            )
            .unwrap_or_default()
        );
    } else {
        eprint!("{}", import.report);
        let (carried, changed, not_carried) = import.report.counts();
        eprintln!(
            "report: {carried} carried over, {changed} changed, {not_carried} not carried (docs/appmesh.md)"
        );
    }
    if let Some(path) = &a.out {
        let text = match Format::from_path(&path.display().to_string()) {
            Format::Json => serde_json::to_string_pretty(&objects).unwrap_or_default() + "\n",
            Format::Toml => import.objects.to_toml()?,
        };
        write(path, &text)?;
        say(
            output,
            format!(
                "Wrote {} (apply it with `portico apply -f {}`).",
                path.display(),
                path.display()
            ),
        );
    }
    if let Some(path) = &a.gateway_file {
        let name = match &a.virtual_gateway {
            Some(n) => n.clone(),
            None => {
                let all: Vec<_> = import.gateways().collect();
                match all.as_slice() {
                    [(name, _, _)] => (*name).to_owned(),
                    [] => anyhow::bail!("the input has no virtual gateway with a spec"),
                    many => anyhow::bail!(
                        "the input has {} virtual gateways: name one with --virtual-gateway ({})",
                        many.len(),
                        many.iter()
                            .map(|(n, _, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        let file = import.gateway_file(&name)?;
        let text = match Format::from_path(&path.display().to_string()) {
            Format::Json => serde_json::to_string_pretty(&file)? + "\n",
            Format::Toml => toml::to_string(&file)
                .with_context(|| format!("cannot write gateway `{name}` as TOML"))?,
        };
        write(path, &text)?;
        say(
            output,
            format!(
                "Wrote gateway `{name}` to {} (serve it with `portico gateway run --config {}`).",
                path.display(),
                path.display()
            ),
        );
    }
    if a.apply {
        let text = serde_json::to_string(&objects)?;
        crate::cli::apply_text(
            &client()?,
            text,
            "application/json",
            &a.path.display().to_string(),
            a.dry_run,
            false,
        )
        .await?;
    } else if a.out.is_none() && a.gateway_file.is_none() && output != Output::Json {
        plan(&import);
    }
    Ok(())
}

/// What would be made, one line per object.
fn plan(import: &portico_appmesh::Import) {
    let o = &import.objects;
    for (name, mesh, vg) in import.gateways() {
        crate::cli::out!("gateway      {name}  (virtual gateway {vg} of mesh {mesh})");
    }
    for s in &o.services {
        let eps: Vec<&str> = s.endpoints.iter().map(|e| e.address.as_str()).collect();
        crate::cli::out!("service      {}  {}", s.name, eps.join(", "));
    }
    for r in &o.routes {
        crate::cli::out!("route        {}  on {}", r.name, r.gateways.join(", "));
    }
    for c in &o.certificates {
        crate::cli::out!("certificate  {}  (upload it first)", c.name);
    }
    crate::cli::out!(
        "{} gateways, {} services, {} routes would be made. Nothing was changed: write them with --out FILE, apply them with --apply, or serve one virtual gateway with --gateway-file FILE.",
        o.gateways.len(),
        o.services.len(),
        o.routes.len()
    );
}

/// A line for people, not for `-o json` (whose standard output is the document).
fn say(output: Output, line: String) {
    if output == Output::Json {
        eprintln!("{line}");
    } else {
        crate::cli::out!("{line}");
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
