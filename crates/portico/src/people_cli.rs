//! People from the command line: `portico users` (and their tokens, and the admin token's
//! rotation), `portico roles` and `portico audit`, as docs/people.md describes the API.
//! Signing in as a user is `session_cli`.

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{Client, Output, Saved, cell, encode, names, utc};
use crate::session_cli::{moment, now, password};

/// `portico users ...`
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List users.
    List,
    /// Create one; the password is read from PORTICO_USER_PASSWORD or standard input.
    Create {
        /// Name.
        name: String,
        /// Roles (repeat or comma-separated; default: subscriber).
        #[arg(long = "role", value_name = "ROLE[,ROLE...]")]
        roles: Vec<String>,
    },
    /// Show one.
    Get {
        /// Name.
        name: String,
    },
    /// Delete one.
    Delete {
        /// Name.
        name: String,
        /// Also delete the portal applications they own (with their keys).
        #[arg(long)]
        force: bool,
    },
    /// Set a user's password (admins: anyone's; yourself: with your current one in
    /// PORTICO_CURRENT_PASSWORD). The new one is read from PORTICO_USER_PASSWORD or standard
    /// input. Every session of the user ends.
    SetPassword {
        /// Name.
        name: String,
    },
    /// Replace a user's roles.
    SetRoles {
        /// Name.
        name: String,
        /// Roles, comma-separated.
        roles: String,
    },
    /// Personal access tokens, and the admin token's rotation.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// `portico users tokens ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Make a personal access token for a user; shown once.
    Create {
        /// User.
        user: String,
        /// Label.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Lifetime: `90d`, `12h`, `30m`, `45s` or seconds (default: the server's).
        #[arg(long, value_name = "DURATION", value_parser = lifetime)]
        expires_in: Option<u64>,
    },
    /// A user's tokens (never the tokens themselves).
    List {
        /// User.
        user: String,
    },
    /// Revoke one of a user's tokens.
    Revoke {
        /// User.
        user: String,
        /// Token id.
        id: String,
    },
    /// Make a new admin token (shown once); every older one stops working.
    RotateAdmin,
}

/// `portico roles ...`
#[derive(Debug, clap::Subcommand)]
pub enum RolesCommand {
    /// List roles.
    List,
    /// Create one.
    Create {
        /// Name.
        name: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete one nothing uses (not a built-in).
    Delete {
        /// Name.
        name: String,
    },
}

/// `portico audit`
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this user's changes.
    #[arg(long)]
    user: Option<String>,
    /// Only changes to this kind of object (api, gateway, user, ...).
    #[arg(long)]
    kind: Option<String>,
    /// From this time on: a duration ago (`1h`, `7d`) or Unix seconds.
    #[arg(long, value_name = "WHEN", value_parser = when)]
    since: Option<i64>,
    /// Up to this time: a duration ago (`1h`, `7d`) or Unix seconds.
    #[arg(long, value_name = "WHEN", value_parser = when)]
    until: Option<i64>,
}

const USER_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/name"),
    ("ROLES", "/roles"),
    ("CREATED", "/created_at"),
];

const TOKEN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("CREATED", "/created_at"),
    ("EXPIRES", "/expires_at"),
    ("LAST USED", "/last_used_at"),
];

const ROLE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/name"),
    ("BUILTIN", "/builtin"),
    ("DESCRIPTION", "/description"),
];

const AUDIT_COLUMNS: &[(&str, &str)] = &[
    ("AT", "/at"),
    ("ACTOR", "/actor"),
    ("ACTION", "/action"),
    ("KIND", "/kind"),
    ("OBJECT", "/object"),
    ("BEFORE", "/before_version"),
    ("AFTER", "/after_version"),
];

/// `portico users ...`
pub async fn users(c: &Client, cmd: UsersCommand) -> anyhow::Result<()> {
    use UsersCommand as U;
    match cmd {
        U::List => c.print(
            &c.get_all("/api/v1/users").await?,
            USER_COLUMNS,
            Some("items"),
        ),
        U::Create { name, roles } => {
            let password = password()?;
            let roles = names(&roles);
            // No roles given: none sent, and the server gives its default (subscriber).
            let roles = (!roles.is_empty()).then_some(roles);
            c.call(
                Method::POST,
                "/api/v1/users",
                Some(&json!({"name": name, "password": password, "roles": roles})),
                None,
            )
            .await?;
            c.done(format!("Created user `{name}`."));
        }
        U::Get { name } => c.print(
            &c.get(&format!("/api/v1/users/{}", encode(&name))).await?,
            USER_COLUMNS,
            None,
        ),
        U::Delete { name, force } => {
            let (_, v) = c
                .call(
                    Method::DELETE,
                    &format!("/api/v1/users/{}?force={force}", encode(&name)),
                    None,
                    None,
                )
                .await?;
            let gone: Vec<&str> = v["applications_removed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if gone.is_empty() {
                c.done(format!("Deleted user `{name}`."));
            } else {
                c.done(format!(
                    "Deleted user `{name}` and their applications {}.",
                    gone.join(", ")
                ));
            }
        }
        U::SetPassword { name } => {
            let password = password()?;
            let current = std::env::var("PORTICO_CURRENT_PASSWORD").ok();
            let (_, v) = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/users/{}/password", encode(&name)),
                    Some(&json!({"password": password, "current_password": current})),
                    None,
                )
                .await?;
            c.done(format!(
                "Changed the password of `{name}`; {} session(s) ended.",
                v["sessions_ended"]
            ));
        }
        U::SetRoles { name, roles } => {
            let roles = names(&[roles]);
            c.call(
                Method::PUT,
                &format!("/api/v1/users/{}/roles", encode(&name)),
                Some(&json!({ "roles": roles })),
                None,
            )
            .await?;
            c.done(if roles.is_empty() {
                format!("`{name}` has no roles now.")
            } else {
                format!("`{name}` has the roles {} now.", roles.join(", "))
            });
        }
        U::Tokens(cmd) => tokens(c, cmd).await?,
    }
    Ok(())
}

/// `portico users tokens ...`
async fn tokens(c: &Client, cmd: TokensCommand) -> anyhow::Result<()> {
    use TokensCommand as T;
    match cmd {
        T::Create {
            user,
            name,
            expires_in,
        } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/users/{}/tokens", encode(&user)),
                    Some(&json!({"name": name, "expires_in": expires_in})),
                    None,
                )
                .await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
            } else {
                let expires = match v.get("expires_at") {
                    None | Some(Value::Null) => "it does not expire".to_owned(),
                    Some(_) => format!("it expires {}", moment(&v["expires_at"])),
                };
                crate::cli::out!(
                    "Token `{name}` for `{user}` (id {}), shown once; {expires}:\n    {}",
                    cell(&v, "/id"),
                    cell(&v, "/token")
                );
            }
        }
        T::List { user } => c.print(
            &c.get_all(&format!("/api/v1/users/{}/tokens", encode(&user)))
                .await?,
            TOKEN_COLUMNS,
            Some("items"),
        ),
        T::Revoke { user, id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/users/{}/tokens/{}", encode(&user), encode(&id)),
                None,
                None,
            )
            .await?;
            c.done(format!("Revoked token `{id}` of `{user}`."));
        }
        T::RotateAdmin => rotate_admin(c).await?,
    }
    Ok(())
}

/// `portico users tokens rotate-admin`: the old admin tokens stop working, so a saved login
/// that used one for this control plane is given the new one.
async fn rotate_admin(c: &Client) -> anyhow::Result<()> {
    let saved = Saved::load().filter(|s| s.url.trim_end_matches('/') == c.url());
    let mut saved_is_admin = false;
    if let Some(s) = &saved {
        let whoami = Client::new(s.url.clone(), s.token.clone(), s.ca_file.clone(), c.output)?
            .try_call(Method::GET, "/api/v1/auth/whoami", None)
            .await?;
        saved_is_admin = whoami.status.is_success() && whoami.value["via"] == "admin_token";
    }
    let (_, v) = c
        .call(Method::POST, "/api/v1/admin-tokens/rotate", None, None)
        .await?;
    let Some(token) = v["token"].as_str().filter(|t| !t.is_empty()) else {
        bail!("the control plane rotated the admin token but answered no token: {v}");
    };
    // The new token is printed before anything else can fail: it is shown only once.
    let stored = match saved {
        Some(s) if saved_is_admin => Some(
            Saved {
                token: token.to_owned(),
                ..s
            }
            .store(),
        ),
        _ => None,
    };
    if c.output == Output::Json {
        let mut out = v.clone();
        out["saved_login_updated"] = json!(matches!(stored, Some(Ok(_))));
        c.print(&out, &[], None);
    } else {
        crate::cli::out!(
            "New admin token, shown once; every older admin token stops working:\n    {token}"
        );
    }
    match stored {
        Some(Ok(path)) if c.output != Output::Json => crate::cli::out!(
            "Your saved login used the old admin token: {} now holds the new one.",
            path.display()
        ),
        Some(Err(e)) => bail!(
            "the saved login still holds the old admin token, which no longer works: {e:#}\nRun `portico login --url {} --token <the new token>`.",
            c.url()
        ),
        _ => {}
    }
    if c.output != Output::Json && !saved_is_admin {
        crate::cli::out!(
            "Replace the old token wherever it is still used (PORTICO_TOKEN, --admin-token, scripts)."
        );
    }
    Ok(())
}

/// `portico roles ...`
pub async fn roles(c: &Client, cmd: RolesCommand) -> anyhow::Result<()> {
    use RolesCommand as R;
    match cmd {
        R::List => c.print(
            &c.get_all("/api/v1/roles").await?,
            ROLE_COLUMNS,
            Some("items"),
        ),
        R::Create { name, description } => {
            c.call(
                Method::POST,
                "/api/v1/roles",
                Some(&json!({"name": name, "description": description})),
                None,
            )
            .await?;
            c.done(format!("Created role `{name}`."));
        }
        R::Delete { name } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/roles/{}", encode(&name)),
                None,
                None,
            )
            .await?;
            c.done(format!("Deleted role `{name}`."));
        }
    }
    Ok(())
}

/// `portico audit [--user U] [--kind K] [--since WHEN] [--until WHEN]`
pub async fn audit(c: &Client, a: AuditArgs) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (a.since, a.until)
        && since > until
    {
        bail!(
            "--since ({} UTC) is after --until ({} UTC): no change could match",
            utc(since),
            utc(until)
        );
    }
    let mut query = Vec::new();
    if let Some(u) = &a.user {
        query.push(format!("user={}", encode(u)));
    }
    if let Some(k) = &a.kind {
        query.push(format!("kind={}", encode(k)));
    }
    if let Some(s) = a.since {
        query.push(format!("since={s}"));
    }
    if let Some(u) = a.until {
        query.push(format!("until={u}"));
    }
    let path = if query.is_empty() {
        "/api/v1/audit".to_owned()
    } else {
        format!("/api/v1/audit?{}", query.join("&"))
    };
    c.print(&c.get_all(&path).await?, AUDIT_COLUMNS, Some("items"));
    Ok(())
}

/// `90d`, `12h`, `30m`, `45s` or plain seconds, as seconds.
fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    let n: u64 = match number.parse() {
        Ok(n) if per > 0 => n,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: write e.g. `90d`, `12h`, `30m`, `45s` or plain seconds"
            ));
        }
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// A token's lifetime (`--expires-in`): a duration longer than zero.
fn lifetime(text: &str) -> Result<u64, String> {
    match seconds(text)? {
        0 => Err(format!(
            "`{text}` would expire at once: give a longer duration"
        )),
        n => Ok(n),
    }
}

/// `--since` / `--until`: Unix seconds, or a duration ago (`1h`, `7d`).
fn when(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("`{text}` is too large for Unix seconds"));
    }
    let ago = seconds(t).map_err(|_| {
        format!("`{text}` is not a time: write a duration ago (`1h`, `7d`) or Unix seconds")
    })?;
    Ok(now().saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_a_unit_or_plain_seconds() {
        assert_eq!(super::seconds("90d"), Ok(90 * 86_400));
        assert_eq!(super::seconds("12h"), Ok(12 * 3_600));
        assert_eq!(super::seconds("30m"), Ok(1_800));
        assert_eq!(super::seconds("45s"), Ok(45));
        assert_eq!(super::seconds("3600"), Ok(3_600));
        for bad in ["", "h", "1.5h", "5x", "-3s", "1 d", "99999999999999999999d"] {
            assert!(super::seconds(bad).is_err(), "{bad}");
        }
        assert!(super::lifetime("0d").is_err());
    }

    #[test]
    fn times_are_unix_seconds_or_a_duration_ago() {
        assert_eq!(super::when("1700000000"), Ok(1_700_000_000));
        let hour_ago = super::when("1h").unwrap_or_default();
        assert!((crate::session_cli::now() - 3_600 - hour_ago).abs() <= 1);
        assert!(super::when("yesterday").is_err());
    }
}
