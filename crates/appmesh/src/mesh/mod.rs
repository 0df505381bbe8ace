//! App Mesh's objects as this importer reads them: typed, checked against App Mesh's own
//! rules (a spec App Mesh would refuse is an error), every field with its JSON path so the
//! report can point at it.
//!
//! - [`common`]: shapes several kinds share (durations, header matches, TLS, health checks)
//! - [`gateway`]: virtual gateways and gateway routes
//! - [`router`]: virtual services, virtual routers and their routes
//! - [`node`]: virtual nodes

pub(crate) mod common;
pub(crate) mod gateway;
pub(crate) mod node;
pub(crate) mod router;

use crate::json::{Obj, R};
use crate::report::{Item, Outcome};

/// A kind of App Mesh object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// A virtual gateway.
    VirtualGateway,
    /// A gateway route of a virtual gateway.
    GatewayRoute,
    /// A virtual service.
    VirtualService,
    /// A virtual router.
    VirtualRouter,
    /// A route of a virtual router.
    Route,
    /// A virtual node.
    VirtualNode,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::VirtualGateway,
        Self::GatewayRoute,
        Self::VirtualService,
        Self::VirtualRouter,
        Self::Route,
        Self::VirtualNode,
    ];

    /// `virtual gateway`, ...
    pub fn words(self) -> &'static str {
        match self {
            Self::VirtualGateway => "virtual gateway",
            Self::GatewayRoute => "gateway route",
            Self::VirtualService => "virtual service",
            Self::VirtualRouter => "virtual router",
            Self::Route => "route",
            Self::VirtualNode => "virtual node",
        }
    }

    /// The key `describe-*` wraps one object in: `virtualGateway`, ...
    pub fn wrapper(self) -> &'static str {
        match self {
            Self::VirtualGateway => "virtualGateway",
            Self::GatewayRoute => "gatewayRoute",
            Self::VirtualService => "virtualService",
            Self::VirtualRouter => "virtualRouter",
            Self::Route => "route",
            Self::VirtualNode => "virtualNode",
        }
    }

    /// The key `list-*` prints its array under: `virtualGateways`, ...
    pub fn list(self) -> &'static str {
        match self {
            Self::VirtualGateway => "virtualGateways",
            Self::GatewayRoute => "gatewayRoutes",
            Self::VirtualService => "virtualServices",
            Self::VirtualRouter => "virtualRouters",
            Self::Route => "routes",
            Self::VirtualNode => "virtualNodes",
        }
    }

    /// The field holding the object's name.
    pub fn name_field(self) -> &'static str {
        match self {
            Self::VirtualGateway => "virtualGatewayName",
            Self::GatewayRoute => "gatewayRouteName",
            Self::VirtualService => "virtualServiceName",
            Self::VirtualRouter => "virtualRouterName",
            Self::Route => "routeName",
            Self::VirtualNode => "virtualNodeName",
        }
    }

    /// The field naming the object it belongs to (gateway routes and routes).
    pub fn parent_field(self) -> Option<&'static str> {
        match self {
            Self::GatewayRoute => Some("virtualGatewayName"),
            Self::Route => Some("virtualRouterName"),
            _ => None,
        }
    }

    /// The command that prints one such object with its spec.
    pub fn describe(self) -> &'static str {
        match self {
            Self::VirtualGateway => "describe-virtual-gateway",
            Self::GatewayRoute => "describe-gateway-route",
            Self::VirtualService => "describe-virtual-service",
            Self::VirtualRouter => "describe-virtual-router",
            Self::Route => "describe-route",
            Self::VirtualNode => "describe-virtual-node",
        }
    }

    /// The kind of a bare object, told by its name fields.
    pub fn of_bare(o: &Obj<'_>) -> Option<Self> {
        // Children first: a gateway route also names its virtual gateway.
        [
            Self::GatewayRoute,
            Self::Route,
            Self::VirtualGateway,
            Self::VirtualRouter,
            Self::VirtualService,
            Self::VirtualNode,
        ]
        .into_iter()
        .find(|k| o.has(k.name_field()))
    }
}

/// Who an object is and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Its kind.
    pub kind: Kind,
    /// Its mesh.
    pub mesh: String,
    /// Its name.
    pub name: String,
    /// The virtual gateway or router it belongs to.
    pub parent: Option<String>,
    /// The file, as shown.
    pub file: String,
    /// JSON path of the object in the file.
    pub at: String,
}

impl Meta {
    /// How the report names it: `virtual gateway ingress-gw`, `gateway route ingress-gw/web`,
    /// with the mesh first when the input holds several meshes.
    pub fn label(&self, with_mesh: bool) -> String {
        let mesh = if with_mesh {
            format!("{}/", self.mesh)
        } else {
            String::new()
        };
        match &self.parent {
            Some(p) => format!("{} {mesh}{p}/{}", self.kind.words(), self.name),
            None => format!("{} {mesh}{}", self.kind.words(), self.name),
        }
    }

    /// What tells two definitions of the same object apart: mesh, kind, parent, name.
    pub fn key(&self) -> (String, Kind, String, String) {
        (
            self.mesh.clone(),
            self.kind,
            self.parent.clone().unwrap_or_default(),
            self.name.clone(),
        )
    }

    /// The path of `rel` (a path from the object, starting with `.`) in the file.
    pub fn path(&self, rel: &str) -> String {
        format!("{}{rel}", self.at)
    }
}

/// Where report items of one object go while it is read or translated.
pub(crate) struct Cx<'n> {
    /// The file, as shown.
    pub file: String,
    /// The object, as the report names it.
    pub object: String,
    /// The items.
    pub notes: &'n mut Vec<Item>,
}

impl Cx<'_> {
    /// Adds an item.
    pub fn note(&mut self, outcome: Outcome, path: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Item {
            file: self.file.clone(),
            path: path.into(),
            object: self.object.clone(),
            outcome,
            message: message.into(),
        });
    }

    /// Something not carried over.
    pub fn not_carried(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.note(Outcome::NotCarried, path, message);
    }

    /// Something carried over with a difference.
    pub fn changed(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.note(Outcome::Changed, path, message);
    }

    /// Something carried over as it is.
    pub fn carried(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.note(Outcome::Carried, path, message);
    }

    /// Reports the fields of `o` nothing read: unknown to this importer.
    pub fn rest(&mut self, o: &Obj<'_>) {
        for (path, key) in o.rest() {
            self.not_carried(
                path,
                format!(
                    "`{key}` is not an App Mesh field this importer knows; nothing was made of it"
                ),
            );
        }
    }
}

/// A port: 1 to 65535.
pub(crate) fn port(o: &Obj<'_>, key: &str) -> R<Option<u16>> {
    Ok(o.int(key, 1, 65_535)?.map(|p| p as u16))
}

/// A required port.
pub(crate) fn req_port(o: &Obj<'_>, key: &str) -> R<u16> {
    Ok(o.req_int(key, 1, 65_535)? as u16)
}
