//! Who may do what: the kinds of object, the built-in roles, the caller of a request, the
//! one authorization check every admin API call passes ([`authorize`]), and the one
//! visibility rule every portal read passes ([`Viewer`]).

use portico_model::{ApiSpec, GatewaySpec, Lifecycle};

use crate::error::Error;

/// The built-in role that may do everything.
pub const ADMIN: &str = "admin";
/// The built-in role that publishes services, routes, APIs, apps and certificates.
pub const PUBLISHER: &str = "publisher";
/// The built-in role of the developer portal's users.
pub const SUBSCRIBER: &str = "subscriber";
/// The roles every control plane has.
pub const BUILTIN_ROLES: [&str; 3] = [ADMIN, PUBLISHER, SUBSCRIBER];

/// Every kind of object the admin API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KindId {
    /// Gateways, their credentials, nodes and snapshots.
    Gateway,
    /// Upstream services.
    Service,
    /// Raw routes.
    Route,
    /// APIs, their revisions, deployments and lifecycle.
    Api,
    /// Consumers (applications), their keys and subscriptions.
    Consumer,
    /// Throttling tiers.
    Tier,
    /// Hosted apps, their versions, files and deployments.
    App,
    /// Uploaded certificates.
    Certificate,
    /// Automatic (ACME) certificates.
    Acme,
    /// The token service's signing keys.
    SigningKey,
    /// People who sign in.
    User,
    /// Roles.
    Role,
    /// A user's own tokens and sessions.
    Token,
    /// The admin token.
    AdminToken,
    /// The audit log.
    Audit,
    /// The fleet's state.
    Status,
    /// A bundle of definitions applied at once (each kind in it is checked too).
    Apply,
    /// The developer portal's own reads and the caller's applications.
    Portal,
}

impl KindId {
    /// The name the audit log and errors use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Service => "service",
            Self::Route => "route",
            Self::Api => "api",
            Self::Consumer => "consumer",
            Self::Tier => "tier",
            Self::App => "app",
            Self::Certificate => "certificate",
            Self::Acme => "acme",
            Self::SigningKey => "signing_key",
            Self::User => "user",
            Self::Role => "role",
            Self::Token => "token",
            Self::AdminToken => "admin_token",
            Self::Audit => "audit",
            Self::Status => "status",
            Self::Apply => "apply",
            Self::Portal => "portal",
        }
    }

    /// Reads a kind's name (`api`, `gateway`, …).
    pub fn parse(s: &str) -> Option<Self> {
        ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// What a person calls one of them, in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Api => "API",
            Self::Acme => "automatic certificate for host",
            Self::SigningKey => "signing key",
            Self::AdminToken => "admin token",
            other => other.as_str(),
        }
    }

    /// Where they are listed: the API path under `/api/v1` and the CLI command.
    pub fn listed_at(self) -> (&'static str, &'static str) {
        match self {
            Self::Gateway => ("gateways", "gateways list"),
            Self::Service => ("services", "services list"),
            Self::Route => ("routes", "routes list"),
            Self::Api => ("apis", "apis list"),
            Self::Consumer => ("consumers", "consumers list"),
            Self::Tier => ("tiers", "tiers list"),
            Self::App => ("apps", "apps list"),
            Self::Certificate => ("certificates", "certificates list"),
            Self::Acme => ("acme/hosts", "certificates acme"),
            Self::SigningKey => ("signing-keys", "signing-keys list"),
            Self::User | Self::AdminToken => ("users", "users list"),
            Self::Role => ("roles", "roles list"),
            Self::Token => ("users/{name}/tokens", "users tokens list USER"),
            Self::Audit => ("audit", "audit"),
            Self::Status => ("status", "status"),
            Self::Apply => ("apply", "apply"),
            Self::Portal => ("portal/apis", "portal"),
        }
    }
}

/// Every kind, for parsing.
pub const ALL: [KindId; 18] = [
    KindId::Gateway,
    KindId::Service,
    KindId::Route,
    KindId::Api,
    KindId::Consumer,
    KindId::Tier,
    KindId::App,
    KindId::Certificate,
    KindId::Acme,
    KindId::SigningKey,
    KindId::User,
    KindId::Role,
    KindId::Token,
    KindId::AdminToken,
    KindId::Audit,
    KindId::Status,
    KindId::Apply,
    KindId::Portal,
];

/// Reading or changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// GET.
    Read,
    /// Everything else.
    Write,
}

/// How a caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The admin token.
    AdminToken,
    /// A personal access token.
    Token,
    /// A session from `POST /api/v1/auth/login`.
    Session,
}

impl Via {
    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminToken => "admin_token",
            Self::Token => "token",
            Self::Session => "session",
        }
    }
}

/// Who is calling: a signed-in user or the admin token.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user's name, or the admin token's label.
    pub name: String,
    /// Their roles (the admin token has `admin`).
    pub roles: Vec<String>,
    /// How they proved it.
    pub via: Via,
    /// The token or session used (to end a session).
    pub token_id: Option<String>,
}

impl Caller {
    /// Whether the caller has `role`.
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// Whether the caller may do everything.
    pub fn is_admin(&self) -> bool {
        self.has(ADMIN)
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self.via {
            Via::AdminToken => format!("admin-token:{}", self.name),
            Via::Token | Via::Session => format!("user:{}", self.name),
        }
    }

    /// Whether this caller is user `name`.
    pub fn is_user(&self, name: &str) -> bool {
        self.via != Via::AdminToken && self.name.eq_ignore_ascii_case(name)
    }
}

/// The roles that may do `action` to `kind`, besides `admin` (who may do everything).
/// An empty answer means admins only. `Token` and `Portal` have rules of their own in
/// [`authorize`].
pub fn roles_for(kind: KindId, action: Action) -> &'static [&'static str] {
    use Action::{Read, Write};
    use KindId as K;
    match (kind, action) {
        (K::Service | K::Route | K::Api | K::App | K::Certificate | K::Apply, _) => &[PUBLISHER],
        (K::Gateway | K::Tier | K::Acme | K::Status, Read) => &[PUBLISHER],
        (K::Portal, Write) => &[SUBSCRIBER],
        _ => &[],
    }
}

/// The one authorization check: may `caller` do `action` to `kind`? `owner` is the user a
/// path names (`/users/{name}/tokens`), for the kinds a user may manage for themself.
/// Anonymous callers may only read the portal; a refusal names the role that is missing.
pub fn authorize(
    caller: Option<&Caller>,
    kind: KindId,
    action: Action,
    owner: Option<&str>,
) -> Result<(), Error> {
    let Some(caller) = caller else {
        if kind == KindId::Portal && action == Action::Read {
            return Ok(());
        }
        return Err(Error::Unauthorized(
            "sign in: send `Authorization: Bearer <token>` with the admin token, a personal access token, or a session from POST /api/v1/auth/login (`portico login`)".into(),
        ));
    };
    if caller.is_admin() {
        return Ok(());
    }
    let allowed = match kind {
        KindId::Portal if action == Action::Read => true,
        // A path that names no user is about the caller themself (`/auth/whoami`).
        KindId::Token => owner.is_none_or(|o| caller.is_user(o)),
        _ => roles_for(kind, action).iter().any(|r| caller.has(r)),
    };
    if allowed {
        return Ok(());
    }
    let needs: Vec<String> = match kind {
        KindId::Token => vec![format!("`{ADMIN}` (or to be that user)")],
        _ => roles_for(kind, action)
            .iter()
            .chain(std::iter::once(&ADMIN))
            .map(|r| format!("`{r}`"))
            .collect(),
    };
    let verb = match action {
        Action::Read => "reading",
        Action::Write => "changing",
    };
    Err(Error::Forbidden(format!(
        "{verb} {} needs the {} role; `{}` has {}",
        plural(kind),
        needs.join(" or "),
        caller.name,
        if caller.roles.is_empty() {
            "no roles".to_owned()
        } else {
            caller
                .roles
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}

fn plural(kind: KindId) -> String {
    match kind {
        KindId::Status => "the fleet's status".into(),
        KindId::Apply => "definitions with apply".into(),
        KindId::Portal => "portal applications".into(),
        KindId::Audit => "the audit log".into(),
        KindId::AdminToken => "the admin token".into(),
        other => format!("{}s", other.noun()),
    }
}

/// What one caller (or nobody) may see in the developer portal. Every portal list and
/// get goes through it.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    caller: Option<&'a Caller>,
}

impl<'a> Viewer<'a> {
    /// The viewer of a request.
    pub fn new(caller: Option<&'a Caller>) -> Self {
        Self { caller }
    }

    fn admin(&self) -> bool {
        self.caller.is_some_and(Caller::is_admin)
    }

    fn has_any(&self, roles: &[String]) -> bool {
        self.caller.is_some_and(|c| roles.iter().any(|r| c.has(r)))
    }

    /// Whether the viewer sees this gateway (its invoke URLs): admins always; otherwise
    /// not when one of its denied roles is theirs, and only with an allowed role when it
    /// names any. Anonymous viewers see only gateways without any rule.
    pub fn sees_gateway(&self, g: &GatewaySpec) -> bool {
        if self.admin() {
            return true;
        }
        let v = &g.visibility;
        if self.caller.is_none() {
            return v.roles_allowed.is_empty() && v.roles_denied.is_empty();
        }
        if self.has_any(&v.roles_denied) {
            return false;
        }
        v.roles_allowed.is_empty() || self.has_any(&v.roles_allowed)
    }

    /// Whether the gateway is offered in the viewer's try-out picker.
    pub fn tries_on(&self, g: &GatewaySpec) -> bool {
        g.display_in_console && self.sees_gateway(g)
    }

    /// Whether the viewer sees this API in the portal: only once it is published
    /// (`published` or `deprecated`), and when restricted only with one of its roles.
    pub fn sees_api(&self, lifecycle: Lifecycle, a: &ApiSpec) -> bool {
        if !matches!(lifecycle, Lifecycle::Published | Lifecycle::Deprecated) {
            return false;
        }
        match &a.visibility {
            portico_model::ApiVisibility::Public => true,
            portico_model::ApiVisibility::Restricted => {
                self.admin() || self.has_any(&a.visible_roles)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            name: "someone".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            via: Via::Token,
            token_id: None,
        }
    }

    #[test]
    fn the_matrix_of_built_in_roles() {
        use Action::{Read, Write};
        let admin = caller(&[ADMIN]);
        let publisher = caller(&[PUBLISHER]);
        let subscriber = caller(&[SUBSCRIBER]);
        let partner = caller(&["partner"]);
        for kind in ALL {
            for action in [Read, Write] {
                assert!(authorize(Some(&admin), kind, action, None).is_ok());
                let p = authorize(Some(&publisher), kind, action, None).is_ok();
                let expected_p = match kind {
                    KindId::Service
                    | KindId::Route
                    | KindId::Api
                    | KindId::App
                    | KindId::Certificate
                    | KindId::Apply => true,
                    KindId::Gateway | KindId::Tier | KindId::Acme | KindId::Status => {
                        action == Read
                    }
                    KindId::Portal => action == Read,
                    KindId::Token => true,
                    _ => false,
                };
                assert_eq!(p, expected_p, "publisher {kind:?} {action:?}");
                let s = authorize(Some(&subscriber), kind, action, None).is_ok();
                assert_eq!(
                    s,
                    matches!(kind, KindId::Portal | KindId::Token),
                    "subscriber {kind:?} {action:?}"
                );
                let o = authorize(Some(&partner), kind, action, None).is_ok();
                assert_eq!(
                    o,
                    kind == KindId::Token || (kind == KindId::Portal && action == Read),
                    "custom role {kind:?} {action:?}"
                );
                let anon = authorize(None, kind, action, None);
                assert_eq!(anon.is_ok(), kind == KindId::Portal && action == Read);
            }
        }
        let me = caller(&[SUBSCRIBER]);
        assert!(authorize(Some(&me), KindId::Token, Write, Some("SOMEONE")).is_ok());
        assert!(authorize(Some(&me), KindId::Token, Write, Some("other")).is_err());
    }

    #[test]
    fn refusals_name_the_missing_role() {
        let e = authorize(
            Some(&caller(&[SUBSCRIBER])),
            KindId::Api,
            Action::Write,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`publisher` or `admin`"), "{e}");
        assert!(e.contains("`subscriber`"), "{e}");
        let e = authorize(
            Some(&caller(&[PUBLISHER])),
            KindId::Gateway,
            Action::Write,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs the `admin` role"), "{e}");
    }

    fn gateway(allowed: &[&str], denied: &[&str], console: bool) -> GatewaySpec {
        let mut g = GatewaySpec::new("g", portico_model::GatewayKind::Hybrid);
        g.visibility.roles_allowed = allowed.iter().map(|r| (*r).to_owned()).collect();
        g.visibility.roles_denied = denied.iter().map(|r| (*r).to_owned()).collect();
        g.display_in_console = console;
        g
    }

    #[test]
    fn gateway_visibility_combinations() {
        let admin = caller(&[ADMIN]);
        let partner = caller(&["partner", SUBSCRIBER]);
        let plain = caller(&[SUBSCRIBER]);
        // (allowed, denied) → (anonymous, plain subscriber, partner, admin)
        let table: [(&[&str], &[&str], [bool; 4]); 5] = [
            (&[], &[], [true, true, true, true]),
            (&["partner"], &[], [false, false, true, true]),
            (&[], &["partner"], [false, true, false, true]),
            (&["partner"], &["partner"], [false, false, false, true]),
            (&[SUBSCRIBER], &["partner"], [false, true, false, true]),
        ];
        for (allowed, denied, want) in table {
            for console in [true, false] {
                let g = gateway(allowed, denied, console);
                let got = [
                    Viewer::new(None).sees_gateway(&g),
                    Viewer::new(Some(&plain)).sees_gateway(&g),
                    Viewer::new(Some(&partner)).sees_gateway(&g),
                    Viewer::new(Some(&admin)).sees_gateway(&g),
                ];
                assert_eq!(got, want, "allowed {allowed:?} denied {denied:?}");
                assert_eq!(Viewer::new(Some(&partner)).tries_on(&g), want[2] && console);
            }
        }
    }
}
