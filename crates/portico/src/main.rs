//! The `portico` binary: one executable for gateway nodes (and, later, the control plane and
//! client commands). Thin: it parses the command line, sets up logging and hands over.

mod acme_local;
mod apps_cli;
mod cli;
mod gateway_cmd;
mod import_cmd;
mod node_cmd;
mod people_cli;
mod server_cmd;
mod session_cli;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use portico_control::admin_tls::AdminTls;

/// mimalloc: the proxy allocates and frees small buffers on every request; glibc's malloc
/// spent 6-8 % of the CPU per request there (bench/callgrind.sh, bench/profile.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portico: a gateway platform.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane with its built-in gateway `default`.
    Server(Box<ServerArgs>),
    /// Run, check or set up a gateway node.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// The whole control-plane state as one file: export it, import it into another store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Store the control plane's URL with a token, or sign in as a user (--user).
    Login(LoginArgs),
    /// Who the stored login is: name, roles and how it signed in.
    Whoami,
    /// End the stored session and forget the stored login.
    Logout,
    /// Gateways: list, link, rotate or revoke tokens, resync.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
    /// Services (upstreams).
    #[command(subcommand)]
    Services(ObjectCommand),
    /// Raw gateway routes.
    #[command(subcommand)]
    Routes(ObjectCommand),
    /// APIs.
    #[command(subcommand)]
    Apis(ApisCommand),
    /// API revisions.
    #[command(subcommand)]
    Revisions(RevisionsCommand),
    /// Deploy an API revision to gateways.
    Deploy(DeployArgs),
    /// Take an API off a gateway.
    Undeploy(UndeployArgs),
    /// Every gateway's nodes: applied version, in sync, stale or offline.
    Status,
    /// Bring the control plane to a file's state, every object in one transaction.
    Apply(ApplyArgs),
    /// Make Portico objects from another product's config (AWS App Mesh).
    #[command(subcommand)]
    Import(import_cmd::ImportCommand),
    /// Consumers: who calls APIs.
    #[command(subcommand)]
    Consumers(ConsumersCommand),
    /// A consumer's subscriptions to APIs.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// A consumer's API keys and client credentials.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A quick access token for a consumer (admin only; for trying an API).
    Token(TokenArgs),
    /// Throttling tiers.
    #[command(subcommand)]
    Tiers(TiersCommand),
    /// Users: their roles and personal access tokens; the admin token's rotation.
    #[command(subcommand)]
    Users(people_cli::UsersCommand),
    /// Roles given to users and named in visibility rules.
    #[command(subcommand)]
    Roles(people_cli::RolesCommand),
    /// The audit log: who changed what, when.
    Audit(people_cli::AuditArgs),
    /// HTTPS certificates: uploaded ones and automatic ones (ACME).
    #[command(subcommand)]
    Certificates(CertificatesCommand),
    /// Hosted web apps: versions, deployments to gateways, rollbacks.
    #[command(subcommand)]
    Apps(apps_cli::AppsCommand),
}

/// `portico certificates ...`
#[derive(Debug, Subcommand)]
pub enum CertificatesCommand {
    /// List uploaded certificates (never their keys).
    List,
    /// Upload a certificate chain and its key (a private CA's, say); it takes precedence
    /// over automatic certificates for its hosts.
    Upload {
        /// Name.
        name: String,
        /// PEM file: the certificate, then its chain.
        #[arg(long)]
        cert: PathBuf,
        /// PEM file: the private key (sent once, stored encrypted, never shown again).
        #[arg(long)]
        key: PathBuf,
    },
    /// Delete an uploaded certificate.
    Delete {
        /// Name.
        name: String,
    },
    /// Automatic certificates per host: state, expiry, next renewal, last error.
    Acme,
    /// Order a host's automatic certificate now (renew early, or retry at once).
    Order {
        /// Host.
        host: String,
    },
}

/// `portico tiers ...`
#[derive(Debug, Subcommand)]
pub enum TiersCommand {
    /// List tiers.
    List,
    /// Create one: LIMIT requests per PERIOD.
    Create {
        /// Name.
        name: String,
        /// Requests per period.
        #[arg(long)]
        limit: u32,
        /// second, minute, hour or day.
        #[arg(long, default_value = "minute")]
        per: String,
        /// Requests allowed back to back (default: the limit).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Delete one nothing uses.
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The consumer.
    #[arg(long)]
    consumer: String,
    /// production or sandbox.
    #[arg(long = "type", default_value = "production")]
    key_type: String,
    /// Scopes, space-separated (default: every scope its subscriptions declare).
    #[arg(long)]
    scope: Option<String>,
}

/// `portico consumers ...`
#[derive(Debug, Subcommand)]
pub enum ConsumersCommand {
    /// List consumers.
    List,
    /// Show one.
    Get {
        /// Name.
        name: String,
    },
    /// Create one.
    Create {
        /// Name.
        name: String,
        /// Who owns it.
        #[arg(long, default_value = "")]
        owner: String,
        /// Throttling tier.
        #[arg(long)]
        tier: Option<String>,
    },
    /// Delete one, with its subscriptions and credentials.
    Delete {
        /// Name.
        name: String,
    },
    /// Block one: its API keys and tokens are refused on every gateway from the next
    /// snapshot on, and the token service issues it none.
    Block {
        /// Name.
        name: String,
    },
    /// Unblock one.
    Unblock {
        /// Name.
        name: String,
    },
}

/// `portico subscriptions ...`
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// A consumer's subscriptions.
    List {
        /// Consumer.
        consumer: String,
    },
    /// Subscribe a consumer to an API.
    Add {
        /// Consumer.
        consumer: String,
        /// API id.
        #[arg(long)]
        api: String,
        /// Throttling tier.
        #[arg(long)]
        tier: Option<String>,
    },
    /// End a subscription.
    Remove {
        /// Consumer.
        consumer: String,
        /// API id.
        #[arg(long)]
        api: String,
    },
}

/// `portico keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// A consumer's credentials (never their secrets).
    List {
        /// Consumer.
        consumer: String,
    },
    /// Make an API key (or, with --client, a client id and secret); shown once.
    Create {
        /// Consumer.
        consumer: String,
        /// production or sandbox.
        #[arg(long = "type", default_value = "production")]
        key_type: String,
        /// A client id and secret for the token service instead of an API key.
        #[arg(long)]
        client: bool,
        /// Days until it stops working.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Replace one with a new one of the same kind and type, and revoke it.
    Rotate {
        /// Consumer.
        consumer: String,
        /// Credential id.
        id: String,
    },
    /// Revoke one: gateways refuse it after their next sync.
    Revoke {
        /// Consumer.
        consumer: String,
        /// Credential id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Run a gateway node: from a config file's routes, or linked to a control plane
    /// (`--control-plane` or `[node.control_plane]`). Drains on SIGTERM.
    Run(RunArgs),
    /// Validate a config file and print every error with its path.
    Check(CheckArgs),
    /// Generate a gateway's API token and JWT secret and write the node's config.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Data directory (database, secret key).
    #[arg(long, env = "PORTICO_DATA_DIR", default_value = "portico-data")]
    data_dir: PathBuf,
    /// The database: PostgreSQL (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`) for several
    /// control-plane nodes sharing one state; unset, SQLite in the data directory.
    #[arg(long, env = "PORTICO_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// The key secrets at rest are sealed with (32 bytes, made on first start when missing;
    /// default `<data-dir>/secret.key`). Give every control-plane node of one database the
    /// same file: a node with another key refuses to start.
    #[arg(long, env = "PORTICO_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// The public side's own address: the token service and JWKS, gateway sync and node
    /// reports, the developer portal and its API. Set, the `--listen` address serves only
    /// the admin API and the console (a firewall can then keep it inside).
    #[arg(long, env = "PORTICO_PUBLIC_LISTEN")]
    public_listen: Option<std::net::SocketAddr>,
    /// Serve no node of the built-in gateway `default` from this process (another
    /// control-plane node of the same database serves it, or none does).
    #[arg(long)]
    no_builtin_gateway: bool,
    /// Admin API address.
    #[arg(long, env = "PORTICO_LISTEN", default_value = "127.0.0.1:9400")]
    listen: std::net::SocketAddr,
    /// HTTP port of the built-in gateway `default` (used when it is first created).
    #[arg(long, env = "PORTICO_GATEWAY_PORT", default_value_t = 8080)]
    gateway_port: u16,
    /// Health and metrics address of the built-in gateway.
    #[arg(long, env = "PORTICO_INTERNAL", default_value = "127.0.0.1:9401")]
    internal: std::net::SocketAddr,
    /// Revisions kept per API (the oldest undeployed are pruned).
    #[arg(long, env = "PORTICO_MAX_REVISIONS", default_value_t = 10)]
    max_revisions: u32,
    /// Worker threads of the built-in gateway (default one per CPU).
    #[arg(long, env = "PORTICO_WORKERS")]
    workers: Option<usize>,
    /// Seconds without a report after which a node shows as offline.
    #[arg(long, default_value_t = 30)]
    node_offline_after: u64,
    /// Nodes one gateway may have at most; a new node beyond it is refused.
    #[arg(long, env = "PORTICO_MAX_NODES_PER_GATEWAY", default_value_t = 100)]
    max_nodes_per_gateway: usize,
    /// Seconds without a report after which a node is forgotten (and no longer counts).
    #[arg(long, default_value_t = 86_400)]
    node_forget_after: u64,
    /// Who may sign up in the developer portal: open, approval (an admin approves each in
    /// the console) or closed.
    #[arg(long, env = "PORTICO_PORTAL_SIGNUP", default_value = "approval")]
    portal_signup: portico_control::Signup,
    /// A console or portal session unused this long ends (e.g. `30m`); every session ends
    /// 12 h after sign-in in any case.
    #[arg(long, env = "PORTICO_SESSION_IDLE", default_value = "1h")]
    session_idle: portico_model::Duration,
    /// Share the built-in gateway's rate limits through this Redis.
    #[arg(long, env = "PORTICO_RATE_LIMIT_REDIS")]
    rate_limit_redis: Option<String>,
    /// How long the built-in gateway's in-flight requests may run after SIGTERM (the same
    /// setting and default as a gateway node's `drain_timeout`), e.g. `30s`.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value_t = portico_model::defaults::drain_timeout())]
    drain_timeout: portico_model::Duration,
    /// The built-in gateway's access log: `-` (standard output), a file, or `off`.
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value = "-")]
    access_log: String,
    /// Serve the admin API and sync over HTTPS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate from the control plane's own CA, made on first use and
    /// kept in the database (every control-plane node of one database signs with it);
    /// `<data-dir>/tls/ca.pem` is what clients and nodes trust, with `--ca-file`.
    #[arg(long)]
    tls_self_signed: bool,
    /// Host names and IPs the self-signed certificate is for (repeat).
    #[arg(long = "tls-host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    tls_hosts: Vec<String>,
    /// Get certificates for the hosts of gateways with `acme = true` listeners from this
    /// ACME directory (`letsencrypt`, `letsencrypt-staging`, or any RFC 8555 CA's URL).
    #[arg(long, env = "PORTICO_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// Contact e-mail for the ACME account (repeat).
    #[arg(long = "acme-email", requires = "acme_directory")]
    acme_emails: Vec<String>,
    /// PEM CA bundle to trust for the ACME directory's HTTPS (a private or test CA).
    #[arg(long, requires = "acme_directory")]
    acme_ca_file: Option<PathBuf>,
    /// The challenge gateways answer: http-01 (port 80) or tls-alpn-01 (port 443).
    #[arg(long, default_value = "http-01", value_parser = ["http-01", "tls-alpn-01"])]
    acme_challenge: String,
    /// External Account Binding key id, for CAs that need one.
    #[arg(long, requires_all = ["acme_directory", "acme_eab_hmac_key"])]
    acme_eab_kid: Option<String>,
    /// External Account Binding HMAC key (base64url).
    #[arg(
        long,
        env = "PORTICO_ACME_EAB_HMAC_KEY",
        hide_env_values = true,
        requires = "acme_eab_kid"
    )]
    acme_eab_hmac_key: Option<String>,
    /// Seconds before the first retry of a failed order (doubles per failure, up to 6 h).
    #[arg(long, default_value_t = 60, hide = true)]
    acme_retry_base: u64,
    /// The developer portal's origin, `scheme://host[:port]`: every gateway answers its Try
    /// Out's CORS preflights and marks API responses for it (default: the admin API's
    /// origin, `http://<--listen>`, `https://` with TLS).
    #[arg(long, value_name = "URL", env = "PORTICO_PORTAL_ORIGIN", value_parser = portico_model::portal::parse_origin)]
    portal_origin: Option<String>,
    /// Send traces over OTLP/HTTP to this endpoint (`http://collector:4318/v1/traces`):
    /// the admin API's requests and deploys (service `portico-control-plane`), and the
    /// built-in gateway's requests (service `portico-gateway`). Off when unset.
    #[arg(long, value_name = "URL", env = "PORTICO_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Which traces are recorded: parent_based (as the caller decided; new ones by
    /// --trace-ratio), always, never, or ratio.
    #[arg(long, env = "PORTICO_TRACE_SAMPLER", default_value = "parent_based", value_parser = ["parent_based", "always", "never", "ratio"])]
    trace_sampler: String,
    /// The fraction of traces recorded with `ratio` (of new ones with `parent_based`), 0 to 1.
    #[arg(long, env = "PORTICO_TRACE_RATIO", default_value_t = 1.0)]
    trace_ratio: f64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file (optional with --control-plane).
    #[arg(long, short, env = "PORTICO_CONFIG")]
    config: Option<PathBuf>,
    /// Worker threads (overrides `node.workers`; default one per CPU).
    #[arg(long, env = "PORTICO_WORKERS")]
    workers: Option<usize>,
    /// Pull the snapshot from this control plane.
    #[arg(long, env = "PORTICO_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// The gateway's API token (with --control-plane).
    #[arg(
        long,
        env = "PORTICO_GATEWAY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// The gateway's JWT secret, for the admin API.
    #[arg(
        long,
        env = "PORTICO_JWT_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    jwt_secret: Option<String>,
    /// Admin API address.
    #[arg(long, env = "PORTICO_ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Where the last applied snapshot is kept.
    #[arg(long, env = "PORTICO_CACHE_DIR")]
    cache_dir: Option<String>,
    /// Health and metrics address (overrides `node.internal.address`).
    #[arg(long, env = "PORTICO_INTERNAL")]
    internal: Option<std::net::SocketAddr>,
    /// Share rate limits with the gateway's other nodes through this Redis.
    #[arg(long, env = "PORTICO_RATE_LIMIT_REDIS")]
    rate_limit_redis: Option<String>,
    /// PEM of the CA that signed the control plane's HTTPS certificate.
    #[arg(long, env = "PORTICO_CA_FILE")]
    ca_file: Option<String>,
    /// Longest a sync long-poll waits, in seconds.
    #[arg(long, default_value_t = 30, hide = true)]
    poll_wait: u64,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The config file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Write every table and every app file to FILE, read consistently (the server may run).
    Export {
        /// Where to write the dump (mode 0600).
        file: PathBuf,
        #[command(flatten)]
        store: store_cmd::StoreArgs,
    },
    /// Load a dump into an empty store (SQLite in --data-dir, or --database), in one go.
    Import {
        /// The dump `store export` wrote.
        file: PathBuf,
        #[command(flatten)]
        store: store_cmd::StoreArgs,
        /// Replace everything the target store holds (no gateway's snapshot version goes
        /// down: one the store served higher moves past it).
        #[arg(long)]
        force: bool,
        /// The secret key the dump's secrets are sealed with (default
        /// `<data-dir>/secret.key` when it exists): needed only when `--force` must
        /// renumber a snapshot that holds private keys.
        #[arg(long)]
        secret_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Where to write the node's config.
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
    /// The control plane's URL.
    #[arg(long, default_value = "http://127.0.0.1:9400")]
    control_plane: String,
    /// Admin API address.
    #[arg(long, default_value = "0.0.0.0:2020")]
    admin_listen: std::net::SocketAddr,
    /// Cache directory (default: beside the config, named after it: `edge-cache` for
    /// `edge.toml`, so gateways set up in one folder never share a cache).
    #[arg(long)]
    cache_dir: Option<String>,
    /// PEM of the CA that signed the control plane's HTTPS certificate (pinned in the file).
    #[arg(long)]
    ca_file: Option<String>,
    /// Serve the admin API over HTTPS with a self-signed certificate for these names
    /// (repeat; e.g. the gateway's host name and IP).
    #[arg(long = "admin-tls-host")]
    admin_tls_hosts: Vec<String>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["token", "user"])))]
struct LoginArgs {
    /// Control plane URL.
    #[arg(long, default_value = "http://127.0.0.1:9400")]
    url: String,
    /// An admin token (or a personal access token).
    #[arg(long, allow_hyphen_values = true)]
    token: Option<String>,
    /// Sign in as this user; the password is read from PORTICO_USER_PASSWORD or standard input.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// PEM of the CA that signed the control plane's HTTPS certificate.
    #[arg(long)]
    ca_file: Option<String>,
}

/// Connection and output options of client commands.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Control plane URL for client commands (default: what `portico login` stored).
    #[arg(id = "server_url", long = "server", global = true, env = "PORTICO_URL")]
    url: Option<String>,
    /// Admin token for client commands (default: what `portico login` stored).
    #[arg(
        id = "admin_token",
        long = "admin-token",
        global = true,
        env = "PORTICO_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Output: a table, or JSON for scripts.
    #[arg(id = "output_format", long = "output", short = 'o', global = true, value_enum, default_value_t = cli::Output::Table)]
    output: cli::Output,
}

/// `portico gateways ...`
#[derive(Debug, Subcommand)]
pub enum GatewaysCommand {
    /// List gateways.
    List,
    /// Show one.
    Get {
        /// Name.
        name: String,
    },
    /// Create one from a file (a gateway definition).
    Create {
        /// TOML or JSON file.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Link an installed gateway: its admin API is called to prove the credentials.
    Link(Box<LinkArgs>),
    /// Delete one (not `default`); refused while anything is deployed on it.
    Delete {
        /// Name.
        name: String,
        /// Delete it with everything deployed on it (API and app deployments, routes'
        /// attachments, its nodes' records).
        #[arg(long)]
        force: bool,
    },
    /// Make a new API token (and a JWT secret if it has none); shown once.
    RotateToken {
        /// Name.
        name: String,
    },
    /// Revoke its API token: its nodes get nothing new.
    RevokeToken {
        /// Name.
        name: String,
    },
    /// Ask its node to fetch its snapshot now.
    Resync {
        /// Name.
        name: String,
    },
}

/// `portico gateways link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Name (unique, case-insensitive).
    name: String,
    /// production, sandbox or hybrid.
    #[arg(long = "type", default_value = "production")]
    kind: String,
    /// The gateway's admin URL.
    #[arg(long)]
    url: Option<String>,
    /// The gateway server's IP address.
    #[arg(long)]
    ip: Option<String>,
    /// The admin port (default: the URL's, else 2020).
    #[arg(long)]
    port: Option<u16>,
    /// The JWT secret it was installed with.
    #[arg(
        long,
        env = "PORTICO_LINK_JWT_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    jwt_secret: String,
    /// The API token it was installed with.
    #[arg(
        long,
        env = "PORTICO_LINK_API_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    api_token: String,
    /// Hostnames it serves (repeat).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Traffic port (repeat; default 8080).
    #[arg(long)]
    listen: Vec<u16>,
    /// Description.
    #[arg(long, default_value = "")]
    description: String,
    /// Store the credentials without calling the gateway.
    #[arg(long)]
    no_verify: bool,
    /// PEM certificate (or CA) of the gateway's HTTPS admin API.
    #[arg(long)]
    admin_ca: Option<PathBuf>,
}

/// list / get / delete.
#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// List them.
    List,
    /// Show one.
    Get {
        /// Name.
        name: String,
    },
    /// Delete one.
    Delete {
        /// Name.
        name: String,
    },
}

/// `portico apis ...`
#[derive(Debug, Subcommand)]
pub enum ApisCommand {
    /// List APIs.
    List,
    /// Show one.
    Get {
        /// Id (`name-version`).
        id: String,
    },
    /// Create one from a file.
    Create {
        /// TOML or JSON file.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Move it to created, published, deprecated or retired.
    Lifecycle {
        /// Id.
        id: String,
        /// The new state.
        state: String,
    },
    /// Delete one; refused while it is deployed.
    Delete {
        /// Id.
        id: String,
        /// Undeploy it from every gateway and delete it.
        #[arg(long)]
        force: bool,
    },
}

/// `portico revisions ...`
#[derive(Debug, Subcommand)]
pub enum RevisionsCommand {
    /// An API's revisions, newest first.
    List {
        /// API id.
        api: String,
    },
    /// Freeze the API's current definition as a new revision.
    Create {
        /// API id.
        api: String,
        /// What changed.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Delete an undeployed revision.
    Delete {
        /// API id.
        api: String,
        /// Revision number.
        number: u32,
    },
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// API id.
    api: String,
    /// Revision number (an older one rolls back).
    #[arg(long)]
    revision: u32,
    /// Gateways (repeat, or comma-separated).
    #[arg(long = "gateway", short, required = true)]
    gateways: Vec<String>,
    /// Wait until every node of those gateways serves it, with progress.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct UndeployArgs {
    /// API id.
    api: String,
    /// Gateways, repeated or comma-separated (as `deploy` takes them).
    #[arg(long = "gateway", short, required = true)]
    gateway: Vec<String>,
    /// Wait until every node of the gateway has dropped it.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// TOML (or `.json`) file: one object (an API file as `apis create -f` takes, or any
    /// object with `kind = "..."`), or sections `gateways`, `services`, `tiers`, `apis`,
    /// `consumers`, `subscriptions`, `routes`, `certificates`, `apps` (docs/apply.md).
    #[arg(long, short)]
    file: PathBuf,
    /// Check everything exactly as a real apply does and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete stored objects of the kinds the file names that it does not name (never
    /// the built-in gateway `default`).
    #[arg(long)]
    prune: bool,
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: with THP set to `always` (Debian's
    // default), mimalloc's committed arenas fault in 2 MiB at a time, which put an idle
    // gateway at 21 MiB resident and one under load at 26-37 MiB; without, 15-23 MiB
    // (bench/rss.sh). A proxy's working set is small, so the TLB gains nothing from them.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Command::Gateway(GatewayCommand::Check(args)) = &cli.command {
        return gateway_cmd::check(&args.config);
    }
    if let Command::Gateway(GatewayCommand::Init(a)) = &cli.command {
        return report(node_cmd::init(&node_cmd::InitOptions {
            output: a.config.clone(),
            control_plane: a.control_plane.clone(),
            admin_address: a.admin_listen,
            cache_dir: a.cache_dir.clone().unwrap_or_else(|| {
                let stem = a
                    .config
                    .file_stem()
                    .map_or_else(|| "gateway".into(), |s| s.to_string_lossy().into_owned());
                a.config
                    .with_file_name(format!("{stem}-cache"))
                    .to_string_lossy()
                    .into_owned()
            }),
            ca_file: a.ca_file.clone(),
            admin_tls_hosts: a.admin_tls_hosts.clone(),
            force: a.force,
        }));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    report(rt.block_on(dispatch(cli.command, cli.client)))
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(a: &ClientArgs) -> anyhow::Result<cli::Client> {
    cli::Client::connect(a.url.clone(), a.token.clone(), a.output)
}

async fn dispatch(command: Command, global: ClientArgs) -> anyhow::Result<()> {
    match command {
        Command::Store(StoreCommand::Export { file, store }) => {
            store_cmd::export(&file, &store).await
        }
        Command::Store(StoreCommand::Import {
            file,
            store,
            force,
            secret_key_file,
        }) => store_cmd::import(&file, &store, force, secret_key_file.as_deref()).await,
        Command::Server(a) => {
            let a = *a;
            server_cmd::run(server_cmd::ServerOptions {
                data_dir: a.data_dir.clone(),
                database: a.database.clone(),
                secret_key_file: a.secret_key_file.clone(),
                no_builtin_gateway: a.no_builtin_gateway,
                public_listen: a.public_listen,
                listen: a.listen,
                gateway_port: a.gateway_port,
                internal: a.internal,
                max_revisions: a.max_revisions,
                workers: a.workers,
                node_offline_after: std::time::Duration::from_secs(a.node_offline_after.max(1)),
                node_limits: portico_control::NodeLimits {
                    max_nodes: a.max_nodes_per_gateway.max(1),
                    forget_after: std::time::Duration::from_secs(a.node_forget_after.max(1)),
                },
                rate_limit_redis: a.rate_limit_redis,
                portal_signup: a.portal_signup,
                session_idle: a.session_idle.get(),
                drain_timeout: a.drain_timeout,
                portal_origin: a.portal_origin,
                tracing: portico_model::node::Tracing {
                    sampler: a.trace_sampler,
                    ratio: a.trace_ratio,
                    otlp_endpoint: a.otlp_endpoint,
                    ..portico_model::node::Tracing::default()
                },
                access_log: portico_model::AccessLog {
                    enabled: a.access_log != "off",
                    path: a.access_log.clone(),
                },
                tls: match (a.tls_cert, a.tls_key, a.tls_self_signed) {
                    (Some(cert), Some(key), _) => Some(AdminTls::Files { cert, key }),
                    (_, _, true) => Some(AdminTls::SelfSigned { hosts: a.tls_hosts }),
                    _ => None,
                },
                acme: a
                    .acme_directory
                    .map(|directory| portico_control::acme::AcmeConfig {
                        retry_base: std::time::Duration::from_secs(a.acme_retry_base.max(1)),
                        ..portico_control::acme::AcmeConfig::from_settings(
                            &portico_model::NodeAcme {
                                directory,
                                email: a.acme_emails,
                                ca_file: a.acme_ca_file.map(|p| p.display().to_string()),
                                challenge: a.acme_challenge,
                                hosts: Vec::new(),
                                state_dir: String::new(),
                                eab_kid: a.acme_eab_kid,
                                eab_hmac_key: a.acme_eab_hmac_key,
                            },
                        )
                    }),
            })
            .await
        }
        Command::Gateway(GatewayCommand::Run(a)) => run_gateway(a).await,
        Command::Gateway(GatewayCommand::Check(_) | GatewayCommand::Init(_)) => Ok(()),
        Command::Login(a) => match (a.token, a.user) {
            (Some(token), _) => cli::login(&a.url, &token, a.ca_file.as_deref()).await,
            (None, Some(user)) => {
                session_cli::login_user(&a.url, &user, a.ca_file.as_deref()).await
            }
            (None, None) => anyhow::bail!("give --token TOKEN or --user NAME"),
        },
        Command::Whoami => session_cli::whoami(&client(&global)?).await,
        Command::Logout => session_cli::logout(global.url, global.token, global.output).await,
        Command::Gateways(cmd) => cli::gateways(&client(&global)?, cmd).await,
        Command::Services(cmd) => cli::services(&client(&global)?, cmd).await,
        Command::Routes(cmd) => cli::routes(&client(&global)?, cmd).await,
        Command::Apis(cmd) => cli::apis(&client(&global)?, cmd).await,
        Command::Revisions(cmd) => cli::revisions(&client(&global)?, cmd).await,
        Command::Deploy(a) => {
            let wait = a.wait.then(|| std::time::Duration::from_secs(a.timeout));
            cli::deploy(&client(&global)?, &a.api, a.revision, &a.gateways, wait).await
        }
        Command::Undeploy(a) => {
            let wait = a.wait.then(|| std::time::Duration::from_secs(60));
            cli::undeploy(&client(&global)?, &a.api, &a.gateway, wait).await
        }
        Command::Status => cli::status(&client(&global)?).await,
        Command::Consumers(cmd) => cli::consumers(&client(&global)?, cmd).await,
        Command::Subscriptions(cmd) => cli::subscriptions(&client(&global)?, cmd).await,
        Command::Keys(cmd) => cli::keys(&client(&global)?, cmd).await,
        Command::Tiers(cmd) => cli::tiers(&client(&global)?, cmd).await,
        Command::Users(cmd) => people_cli::users(&client(&global)?, cmd).await,
        Command::Roles(cmd) => people_cli::roles(&client(&global)?, cmd).await,
        Command::Audit(a) => people_cli::audit(&client(&global)?, a).await,
        Command::Certificates(cmd) => cli::certificates(&client(&global)?, cmd).await,
        Command::Apps(cmd) => apps_cli::run(&client(&global)?, cmd).await,
        Command::Token(a) => {
            cli::token(
                &client(&global)?,
                &a.consumer,
                &a.key_type,
                a.scope.as_deref(),
            )
            .await
        }
        Command::Apply(a) => cli::apply(&client(&global)?, &a.file, a.dry_run, a.prune).await,
        Command::Import(cmd) => {
            let output = global.output;
            import_cmd::run(cmd, output, || client(&global)).await
        }
    }
}

async fn run_gateway(a: RunArgs) -> anyhow::Result<()> {
    let mut node = match &a.config {
        Some(path) if a.control_plane.is_none() => {
            let file = gateway_cmd::load_file(path)?;
            if file.node.control_plane.is_none() {
                // A gateway from a file: the flags of a linked node mean nothing here.
                let linked_only = [
                    ("--token", a.token.is_some()),
                    ("--jwt-secret", a.jwt_secret.is_some()),
                    ("--admin-listen", a.admin_listen.is_some()),
                    ("--cache-dir", a.cache_dir.is_some()),
                    ("--ca-file", a.ca_file.is_some()),
                ];
                let given: Vec<&str> = linked_only
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(f, _)| *f)
                    .collect();
                if !given.is_empty() {
                    anyhow::bail!(
                        "{} {} for a gateway linked to a control plane; {} has no [node.control_plane] (add one, or pass --control-plane URL)",
                        given.join(", "),
                        if given.len() == 1 { "is" } else { "are" },
                        path.display()
                    );
                }
                return gateway_cmd::run(
                    path,
                    gateway_cmd::Overrides {
                        workers: a.workers,
                        internal: a.internal,
                        rate_limit_redis: a.rate_limit_redis,
                    },
                )
                .await;
            }
            file.node
        }
        Some(path) => gateway_cmd::load_file(path)?.node,
        None => portico_model::NodeSettings::default(),
    };
    if a.workers.is_some() {
        node.workers = a.workers;
    }
    if let Some(addr) = a.internal {
        node.internal.address = addr;
    }
    if let Some(url) = a.rate_limit_redis {
        node.rate_limit_redis = Some(url);
    }
    if let Some(url) = a.control_plane {
        let token = a
            .token
            .or_else(|| node.control_plane.as_ref().map(|c| c.token.clone()))
            .ok_or_else(|| {
                anyhow::anyhow!("--control-plane needs --token (the gateway's API token)")
            })?;
        let mut link = node
            .control_plane
            .take()
            .unwrap_or(portico_model::ControlPlaneLink {
                url: url.clone(),
                token: token.clone(),
                cache_dir: portico_model::node::cache_dir(),
                heartbeat: portico_model::Duration::from_secs(10),
                ca_file: None,
                allow_insecure_http: false,
            });
        link.url = url;
        link.token = token;
        node.control_plane = Some(link);
    }
    let Some(link) = node.control_plane.as_mut() else {
        anyhow::bail!("give --config FILE, or --control-plane URL --token TOKEN");
    };
    if let Some(dir) = a.cache_dir {
        link.cache_dir = dir;
    }
    if let Some(ca) = a.ca_file {
        link.ca_file = Some(ca);
    }
    if let Some(secret) = a.jwt_secret {
        node.admin = Some(portico_model::AdminSettings {
            address: a
                .admin_listen
                .or(node.admin.as_ref().map(|x| x.address))
                .unwrap_or_else(portico_model::node::admin_address),
            jwt_secret: secret,
            tls_cert_file: node.admin.as_ref().and_then(|x| x.tls_cert_file.clone()),
            tls_key_file: node.admin.as_ref().and_then(|x| x.tls_key_file.clone()),
        });
    } else if let (Some(addr), Some(admin)) = (a.admin_listen, node.admin.as_mut()) {
        admin.address = addr;
    }
    node_cmd::run(node, std::time::Duration::from_secs(a.poll_wait.max(1))).await
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
