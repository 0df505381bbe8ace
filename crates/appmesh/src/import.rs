//! What an import gives: Portico objects (an apply document), the report, and standalone
//! gateway files per virtual gateway.

use std::collections::BTreeSet;

use portico_model::apply::CertificateRef;
use portico_model::{GatewayFile, GatewaySpec, RouteSpec, Service};
use serde::Serialize;

use crate::error::Error;
use crate::report::Report;

/// The Portico objects made. Serialized, it is an apply document (`portico apply`): the
/// sections `gateways`, `services`, `routes` and `certificates`, empty ones left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Objects {
    /// One gateway per virtual gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewaySpec>,
    /// One service per listener of each virtual node (and copies where routes need other
    /// settings of it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// The routes, each on its gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Certificates to upload before applying (for listeners whose certificate was in ACM).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateRef>,
}

/// The result of an import.
#[derive(Clone, Debug)]
pub struct Import {
    /// The Portico objects.
    pub objects: Objects,
    /// What was carried, changed and not carried.
    pub report: Report,
    gateways: Vec<GatewayInfo>,
}

/// What a gateway file needs to know of one imported gateway.
#[derive(Clone, Debug)]
pub(crate) struct GatewayInfo {
    /// Its mesh.
    pub mesh: String,
    /// The virtual gateway's name.
    pub virtual_gateway: String,
    /// The Portico gateway's name.
    pub name: String,
    /// Where its access log goes.
    pub access_log: Option<String>,
    /// Why a gateway file cannot stand alone.
    pub incomplete: Vec<String>,
    /// Its routes, bound to their listeners.
    pub routes: Vec<portico_model::Route>,
}

impl Import {
    pub(crate) fn new(objects: Objects, report: Report, gateways: Vec<GatewayInfo>) -> Self {
        Self {
            objects,
            report,
            gateways,
        }
    }

    /// A standalone gateway config (`portico gateway --config`) for one virtual gateway,
    /// named as App Mesh names it or as the Portico gateway is named: its listeners, its
    /// routes and the services they use.
    pub fn gateway_file(&self, virtual_gateway: &str) -> Result<GatewayFile, Error> {
        let info = self
            .gateways
            .iter()
            .find(|g| g.name == virtual_gateway)
            .or_else(|| {
                let mut by_vg = self
                    .gateways
                    .iter()
                    .filter(|g| g.virtual_gateway == virtual_gateway);
                match (by_vg.next(), by_vg.next()) {
                    (Some(one), None) => Some(one),
                    _ => None,
                }
            })
            .ok_or_else(|| Error::UnknownGateway {
                name: virtual_gateway.to_owned(),
                known: self
                    .gateways
                    .iter()
                    .map(|g| format!("{} (mesh {})", g.name, g.mesh))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !info.incomplete.is_empty() {
            return Err(Error::Incomplete {
                gateway: info.name.clone(),
                message: info.incomplete.join("; "),
            });
        }
        let spec = self
            .objects
            .gateways
            .iter()
            .find(|g| g.name == info.name)
            .ok_or_else(|| Error::Incomplete {
                gateway: info.name.clone(),
                message: "the gateway is missing from the objects".into(),
            })?;
        let mut file = GatewayFile {
            schema: portico_model::SCHEMA,
            listeners: spec.listeners.clone(),
            ..GatewayFile::default()
        };
        if let Some(path) = &info.access_log {
            file.node.access_log.path = path.clone();
        }
        let mut used = BTreeSet::new();
        for r in &info.routes {
            for t in r.all_targets() {
                used.insert(t.service);
            }
            file.routes.push(r.clone());
        }
        file.services = self
            .objects
            .services
            .iter()
            .filter(|s| used.contains(&s.name))
            .cloned()
            .collect();
        file.validate().map_err(|e| Error::Incomplete {
            gateway: info.name.clone(),
            message: format!("the gateway file does not validate: {e}"),
        })?;
        Ok(file)
    }

    /// The Portico gateways made, with the virtual gateway (mesh, name) each comes from.
    pub fn gateways(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.gateways
            .iter()
            .map(|g| (g.name.as_str(), g.mesh.as_str(), g.virtual_gateway.as_str()))
    }
}

impl Objects {
    /// The apply document as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // Serialising plain structs into a JSON value cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The apply document as TOML, the form `portico apply` files are usually written in.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| Error::Serialize {
            message: e.to_string(),
        })
    }

    /// Whether nothing was made.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
            && self.services.is_empty()
            && self.routes.is_empty()
            && self.certificates.is_empty()
    }
}
