//! From documents to typed App Mesh objects: who each object is, duplicates told apart from
//! conflicts, every spec read and checked.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::error::Error;
use crate::json::{Bad, R, object};
use crate::mesh::{Cx, Kind, Meta, gateway, node, router};
use crate::report::Item;
use crate::source::{Document, Found, find};
use crate::translate::Input;

/// Fields of describe output that are bookkeeping, not configuration: skipped silently.
const BOOKKEEPING: [&str; 9] = [
    "metadata",
    "status",
    "arn",
    "createdAt",
    "lastUpdatedAt",
    "version",
    "uid",
    "resourceOwner",
    "clientToken",
];

/// Reads every object of the documents.
pub(crate) fn read(docs: &[Document]) -> Result<(Input, Vec<Item>), Error> {
    let mut notes = Vec::new();
    let mut found = Vec::new();
    for d in docs {
        find(d, &mut found, &mut notes)?;
    }
    let mut heads = Vec::new();
    for f in &found {
        let meta = head(f).map_err(|b| invalid(f.file, b))?;
        heads.push((f, meta));
    }
    let meshes: BTreeSet<&str> = heads.iter().map(|(_, m)| m.mesh.as_str()).collect();
    let multi_mesh = meshes.len() > 1;
    // One definition per object; identical copies are dropped, different ones refused.
    let mut first: HashMap<(String, Kind, String, String), (&Found<'_>, &Meta)> = HashMap::new();
    let mut full = Vec::new();
    for (f, meta) in heads.iter().filter(|(f, _)| !f.listed) {
        match first.get(&meta.key()) {
            Some((g, gm)) => {
                if spec_of(g.value) != spec_of(f.value) {
                    return Err(Error::Conflict {
                        kind: meta.kind.words().to_owned(),
                        name: name_of(meta),
                        first: format!("{} {}", gm.file, gm.at),
                        second: format!("{} {}", meta.file, meta.at),
                    });
                }
            }
            None => {
                first.insert(meta.key(), (f, meta));
                full.push((*f, meta));
            }
        }
    }
    let mut reported_lists = BTreeSet::new();
    for (f, meta) in heads.iter().filter(|(f, _)| f.listed) {
        if !first.contains_key(&meta.key()) && reported_lists.insert(meta.key()) {
            let mut cx = Cx {
                file: meta.file.clone(),
                object: meta.label(multi_mesh),
                notes: &mut notes,
            };
            cx.not_carried(
                f.at.clone(),
                format!(
                    "listed only; run `aws appmesh {}` for its spec",
                    meta.kind.describe()
                ),
            );
        }
    }
    let mut input = Input::default();
    input.multi_mesh = multi_mesh;
    for (f, meta) in full {
        let mut cx = Cx {
            file: meta.file.clone(),
            object: meta.label(multi_mesh),
            notes: &mut notes,
        };
        body(f, meta.clone(), &mut input, &mut cx).map_err(|b| invalid(f.file, b))?;
    }
    input.index();
    Ok((input, notes))
}

fn invalid(file: &str, b: Bad) -> Error {
    Error::Invalid {
        file: file.to_owned(),
        path: b.path,
        message: b.message,
    }
}

fn name_of(m: &Meta) -> String {
    match &m.parent {
        Some(p) => format!("{p}/{} (mesh {})", m.name, m.mesh),
        None => format!("{} (mesh {})", m.name, m.mesh),
    }
}

fn spec_of(v: &Value) -> Option<&Value> {
    v.get("spec")
}

/// Who an object is.
fn head(f: &Found<'_>) -> R<Meta> {
    let o = object(f.value, &f.at)?;
    let mesh = o.req_str("meshName")?.to_owned();
    let name = o.req_str(f.kind.name_field())?.to_owned();
    let parent = match f.kind.parent_field() {
        Some(p) => Some(o.req_str(p)?.to_owned()),
        None => None,
    };
    Ok(Meta {
        kind: f.kind,
        mesh,
        name,
        parent,
        file: f.file.to_owned(),
        at: f.at.clone(),
    })
}

/// Reads the object's spec and reports its top-level fields.
fn body(f: &Found<'_>, meta: Meta, input: &mut Input, cx: &mut Cx<'_>) -> R<()> {
    let o = object(f.value, &f.at)?;
    for k in ["meshName", meta.kind.name_field()]
        .into_iter()
        .chain(meta.kind.parent_field())
    {
        o.skip(k);
    }
    for k in BOOKKEEPING {
        o.skip(k);
    }
    if o.get("tags")
        .is_some_and(|t| !t.as_array().is_some_and(Vec::is_empty))
    {
        cx.not_carried(
            o.at("tags"),
            "AWS resource tags: Portico objects have no tags",
        );
    }
    if let Some(owner) = o.str("meshOwner")? {
        cx.not_carried(
            o.at("meshOwner"),
            format!("the mesh's owner account {owner} (a shared mesh): AWS-only"),
        );
    }
    let spec = o.req_obj("spec")?;
    match meta.kind {
        Kind::VirtualGateway => input
            .gateways
            .push(gateway::virtual_gateway(meta, &spec, cx)?),
        Kind::GatewayRoute => input
            .gateway_routes
            .push(gateway::gateway_route(meta, &spec, cx)?),
        Kind::VirtualService => input
            .services
            .push(router::virtual_service(meta, &spec, cx)?),
        Kind::VirtualRouter => input.routers.push(router::virtual_router(meta, &spec, cx)?),
        Kind::Route => input.routes.push(router::route(meta, &spec, cx)?),
        Kind::VirtualNode => input.nodes.push(node::virtual_node(meta, &spec, cx)?),
    }
    cx.rest(&o);
    Ok(())
}
