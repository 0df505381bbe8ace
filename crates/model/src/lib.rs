//! Portico's domain model: the [`Snapshot`] a gateway serves, the static config file that
//! carries one ([`GatewayFile`]), and the rules both must keep. No I/O, no async: the control
//! plane compiles to these types and the data plane compiles them into its runtime.
//!
//! - [`listener`]: ports and protocols
//! - [`app`]: hosted web apps, their versions and bundles
//! - [`apply`]: the document `portico apply` sends, every kind of object in one file
//! - [`acme`]: automatic certificates' challenges and states
//! - [`route`]: matches and actions
//! - [`service`]: upstreams, load balancing, retries, outlier ejection
//! - [`node`]: process settings of one gateway node
//! - [`portal`]: the developer portal's origin, which gateways answer cross-origin
//! - [`snapshot`]: the Snapshot, the config file, parsing
//! - [`control`]: gateways, APIs and raw routes as the control plane stores them
//! - [`sync`]: what nodes pull and report
//! - [`delta`]: what changed between two snapshots, and the digest nodes check it with
//! - [`validate`]: every rule, with field paths in every error
//! - [`units`]: durations and byte sizes as people write them
//! - [`defaults`]: every default value

pub mod acme;
pub mod app;
pub mod apply;
pub mod control;
pub mod defaults;
pub mod delta;
pub mod error;
pub mod listener;
pub mod node;
pub mod packed;
pub mod portal;
pub mod route;
pub mod security;
pub mod service;
pub mod snapshot;
pub mod sync;
pub mod units;
pub mod validate;

pub use acme::{AcmeChallenge, AcmeHostState, AcmeHostStatus, AcmeState, ChallengeKind};
pub use app::{AppBundle, AppFile, AppRoute, AppSpec, CacheRule};
pub use control::{
    ApiSpec, ApiVisibility, ConsumerSpec, GatewayKind, GatewaySpec, Lifecycle, Operation,
    RouteSpec, Visibility,
};
pub use error::{Error, FieldError};
pub use listener::{Limits, Listener, ListenerProtocol, ListenerTls, TlsCertificate};
pub use node::{
    AccessLog, AdminSettings, ControlPlaneLink, Internal, NodeAcme, NodeSettings, PortOwner,
};
pub use portal::Portal;
pub use route::{
    AppRef, FixedResponse, Forward, GrpcMatch, HeaderEdits, HeaderMatch, PathMatch, PrefixRewrite,
    QueryMatch, Redirect, Rewrite, Route, RouteMatch, Target,
};
pub use security::{
    AccessClaims, ApiKeyGrant, AuthMode, Cidr, ConsumerLimits, Cors, IpPolicy, JwtKey, JwtSettings,
    KeyType, Period, RouteAuth, Security, Throttle, Tier,
};
pub use service::{
    ConnectionPool, Endpoint, EndpointSettings, FailMode, HashOn, HealthCheck, HealthProtocol,
    LoadBalancing, OutlierDetection, Retries, Service, StatusRange, UpstreamProtocol, UpstreamTls,
};
pub use snapshot::{Format, GatewayFile, SCHEMA, Snapshot};
pub use sync::{
    ADMIN_AUDIENCE, ADMIN_ISSUER, AdminClaims, DELTA_CONTENT_TYPE, DeltaStep,
    MAX_REPORTED_ENDPOINTS, NodeReport, SyncDeltas, SyncEnvelope, UnhealthyEndpoint,
};
pub use units::{ByteSize, Duration};
