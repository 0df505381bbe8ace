//! People: users with roles, the roles themselves, users' tokens and sessions, the admin
//! token, and the audit log.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Store, change_one, from_json, key, now, to_json};
use crate::access::{BUILTIN_ROLES, KindId, Via};
use crate::error::Error;
use crate::page::Page;
use portico_model::FieldError;

/// A user, without the password hash.
#[derive(Clone, Debug, Serialize)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// `active`, or `pending` when they signed up and wait for an admin's approval.
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A role.
#[derive(Clone, Debug, Serialize)]
pub struct RoleRecord {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// One of `admin`, `publisher`, `subscriber` (cannot be deleted).
    pub builtin: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A personal access token or a session, without its secret.
#[derive(Clone, Debug, Serialize)]
pub struct UserTokenRecord {
    /// Its id.
    pub id: String,
    /// The label its owner gave it.
    pub name: String,
    /// `token` or `session`.
    pub kind: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when it stops working.
    pub expires_at: Option<i64>,
    /// Unix seconds, when it was last used (to the minute).
    pub last_used_at: Option<i64>,
}

/// Who a token belongs to.
#[derive(Clone, Debug)]
pub struct TokenHolder {
    /// The user's or the admin token's name.
    pub name: String,
    /// The user's roles (`admin` for the admin token).
    pub roles: Vec<String>,
    /// Which kind of token.
    pub via: Via,
    /// The token's id.
    pub id: String,
}

/// One row of the audit log.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// Its number, growing.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// `admin-token:NAME`, `user:NAME` or `system`.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To which kind of object.
    pub kind: String,
    /// Which one.
    pub object: String,
    /// Its version before, when it had one.
    pub before_version: Option<i64>,
    /// Its version after, when it has one.
    pub after_version: Option<i64>,
}

/// What the audit log is filtered by.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// `admin-token:NAME`, `user:NAME`, or a bare name matching either.
    pub actor: Option<String>,
    /// A kind's name.
    pub kind: Option<String>,
    /// From (Unix seconds, inclusive).
    pub since: Option<i64>,
    /// Until (Unix seconds, inclusive).
    pub until: Option<i64>,
}

fn token_kind(via: Via) -> &'static str {
    match via {
        Via::Session => "session",
        _ => "token",
    }
}

/// The roles of `names` that do not exist, as field errors under `path`.
pub(crate) async fn unknown_roles(
    conn: &mut AnyConnection,
    names: &[String],
    path: &str,
) -> Result<Vec<FieldError>, Error> {
    let known: Vec<(String, String)> =
        sqlx::query_as("SELECT name_key, name FROM roles ORDER BY name_key")
            .fetch_all(&mut *conn)
            .await?;
    let list = known
        .iter()
        .map(|(_, n)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(names
        .iter()
        .enumerate()
        .filter(|(_, n)| !known.iter().any(|(k, _)| *k == key(n)))
        .map(|(i, n)| {
            FieldError::new(
                format!("{path}[{i}]"),
                format!("no role named `{n}`: the roles are {list} (create one with `portico roles create NAME`)"),
            )
        })
        .collect())
}

/// A name that was taken when an insert that does nothing on conflict wrote no row.
fn taken(rows: u64, kind: KindId, name: &str) -> Result<(), Error> {
    if rows == 0 {
        return Err(Error::Conflict(format!(
            "a {} named `{name}` exists already (names are case-insensitive)",
            kind.noun()
        )));
    }
    Ok(())
}

fn user_record(
    name: String,
    roles: &str,
    status: String,
    created_at: i64,
) -> Result<UserRecord, Error> {
    Ok(UserRecord {
        name,
        roles: from_json(roles)?,
        status,
        created_at,
    })
}

impl Store {
    // ---- users ----

    /// A page of users, by name.
    pub async fn users(&self, page: &Page) -> Result<Vec<(String, UserRecord)>, Error> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT name_key, name, roles, status, created_at FROM users WHERE name_key > $1 \
             ORDER BY name_key LIMIT $2",
        )
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(k, name, roles, status, t)| Ok((k, user_record(name, &roles, status, t)?)))
            .collect()
    }

    /// One user.
    pub async fn user(&self, name: &str) -> Result<UserRecord, Error> {
        let row: Option<(String, String, String, i64)> =
            sqlx::query_as("SELECT name, roles, status, created_at FROM users WHERE name_key = $1")
                .bind(key(name))
                .fetch_optional(&self.pool)
                .await?;
        let (name_, roles, status, t) = row.ok_or_else(|| Error::not_found(KindId::User, name))?;
        user_record(name_, &roles, status, t)
    }

    /// Creates a user with an already hashed password and these (existing) roles.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<UserRecord, Error> {
        self.add_user(name, password_hash, roles, "active").await
    }

    /// Records a portal sign-up: a subscriber who waits for an admin's approval unless
    /// `approved`.
    pub async fn sign_up(
        &self,
        name: &str,
        password_hash: &str,
        approved: bool,
    ) -> Result<UserRecord, Error> {
        let roles = [crate::access::SUBSCRIBER.to_owned()];
        let status = if approved { "active" } else { "pending" };
        self.add_user(name, password_hash, &roles, status).await
    }

    /// Lets a pending sign-up sign in.
    pub async fn approve_user(&self, name: &str) -> Result<UserRecord, Error> {
        let mut tx = self.write().await?;
        tx.event("approve", KindId::User, name);
        change_one(
            &mut tx,
            sqlx::query("UPDATE users SET status = 'active' WHERE name_key = $1").bind(key(name)),
            || Error::not_found(KindId::User, name),
        )
        .await?;
        tx.commit().await?;
        self.user(name).await
    }

    async fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        roles: &[String],
        status: &str,
    ) -> Result<UserRecord, Error> {
        let mut tx = self.write().await?;
        tx.event("create", KindId::User, name);
        let unknown = unknown_roles(&mut tx, roles, "roles").await?;
        if !unknown.is_empty() {
            return Err(Error::Invalid(unknown));
        }
        let done = sqlx::query(
            "INSERT INTO users (name_key, name, password_hash, created_at, roles, status) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(key(name))
        .bind(name)
        .bind(password_hash)
        .bind(now())
        .bind(to_json(&roles)?)
        .bind(status)
        .execute(&mut *tx)
        .await?;
        taken(done.rows_affected(), KindId::User, name)?;
        tx.commit().await?;
        self.user(name).await
    }

    /// Gives a user these (existing) roles instead of theirs.
    pub async fn set_user_roles(&self, name: &str, roles: &[String]) -> Result<UserRecord, Error> {
        let mut tx = self.write().await?;
        tx.event("set_roles", KindId::User, name);
        let unknown = unknown_roles(&mut tx, roles, "roles").await?;
        if !unknown.is_empty() {
            return Err(Error::Invalid(unknown));
        }
        change_one(
            &mut tx,
            sqlx::query("UPDATE users SET roles = $1 WHERE name_key = $2")
                .bind(to_json(&roles)?)
                .bind(key(name)),
            || Error::not_found(KindId::User, name),
        )
        .await?;
        tx.commit().await?;
        self.user(name).await
    }

    /// A user's name, password hash, roles and whether they may sign in (a sign-up waiting
    /// for approval may not).
    pub async fn password_hash(
        &self,
        name: &str,
    ) -> Result<Option<(String, String, Vec<String>, bool)>, Error> {
        let row: Option<(String, String, String, String)> = sqlx::query_as(
            "SELECT name, password_hash, roles, status FROM users WHERE name_key = $1",
        )
        .bind(key(name))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(n, h, r, s)| Ok((n, h, from_json(&r)?, s == "active")))
            .transpose()
    }

    /// Deletes a user with their tokens and sessions. The applications they made in the
    /// portal go too, with their keys and subscriptions, only with `force`: without, a user
    /// who has any is refused, naming them. Either way nothing they owned passes to a
    /// later user of the same name. Answers the applications removed.
    pub async fn delete_user(&self, name: &str, force: bool) -> Result<Vec<String>, Error> {
        let mut tx = self.write().await?;
        tx.event("delete", KindId::User, name);
        let owned: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, name_key FROM consumers WHERE owner_user = $1 ORDER BY name_key",
        )
        .bind(key(name))
        .fetch_all(&mut *tx)
        .await?;
        if !owned.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "user `{name}` owns applications {}: delete them first, or delete the user with --force (`?force=true`) to delete them too",
                owned
                    .iter()
                    .map(|(_, n)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM users WHERE name_key = $1").bind(key(name)),
            || Error::not_found(KindId::User, name),
        )
        .await?;
        let mut gateways = Vec::new();
        for (id, consumer) in &owned {
            gateways.extend(super::consumers::consumer_gateways(&mut tx, *id).await?);
            tx.event("delete", KindId::Consumer, consumer);
            sqlx::query("DELETE FROM consumers WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        gateways.sort_unstable();
        gateways.dedup();
        tx.recompile(&gateways).await?;
        tx.commit().await?;
        Ok(owned.into_iter().map(|(_, n)| n).collect())
    }

    // ---- roles ----

    /// Every role, by name.
    pub async fn roles(&self) -> Result<Vec<RoleRecord>, Error> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, description, builtin, created_at FROM roles ORDER BY name_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, description, builtin, created_at)| RoleRecord {
                name,
                description,
                builtin: builtin == 1,
                created_at,
            })
            .collect())
    }

    /// The roles of `names` that do not exist, as field errors under `path`.
    pub async fn unknown_roles(
        &self,
        names: &[String],
        path: &str,
    ) -> Result<Vec<FieldError>, Error> {
        let mut conn = self.pool.acquire().await?;
        unknown_roles(&mut conn, names, path).await
    }

    /// Creates a role of the operator's own.
    pub async fn create_role(&self, name: &str, description: &str) -> Result<RoleRecord, Error> {
        let mut tx = self.write().await?;
        tx.event("create", KindId::Role, name);
        let done = sqlx::query(
            "INSERT INTO roles (name_key, name, description, builtin, created_at) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(key(name))
        .bind(name)
        .bind(description)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        taken(done.rows_affected(), KindId::Role, name)?;
        tx.commit().await?;
        Ok(RoleRecord {
            name: name.to_owned(),
            description: description.to_owned(),
            builtin: false,
            created_at: now(),
        })
    }

    /// Deletes a role nobody has and no visibility rule names.
    pub async fn delete_role(&self, name: &str) -> Result<(), Error> {
        let k = key(name);
        if BUILTIN_ROLES.contains(&k.as_str()) {
            return Err(Error::Conflict(format!(
                "`{k}` is a built-in role and cannot be deleted"
            )));
        }
        let mut tx = self.write().await?;
        tx.event("delete", KindId::Role, name);
        let mut used = Vec::new();
        let users: Vec<(String, String)> =
            sqlx::query_as("SELECT name, roles FROM users ORDER BY name_key")
                .fetch_all(&mut *tx)
                .await?;
        for (user, roles) in users {
            if from_json::<Vec<String>>(&roles)?
                .iter()
                .any(|r| key(r) == k)
            {
                used.push(format!("user `{user}`"));
            }
        }
        let gateways: Vec<String> =
            sqlx::query_scalar("SELECT spec FROM gateways ORDER BY name_key")
                .fetch_all(&mut *tx)
                .await?;
        for g in gateways {
            let g: portico_model::GatewaySpec = from_json(&g)?;
            let v = &g.visibility;
            if v.roles_allowed
                .iter()
                .chain(&v.roles_denied)
                .any(|r| key(r) == k)
            {
                used.push(format!("gateway `{}`", g.name));
            }
        }
        let apis: Vec<(String, String)> =
            sqlx::query_as("SELECT api_key, spec FROM apis ORDER BY api_key")
                .fetch_all(&mut *tx)
                .await?;
        for (id, spec) in apis {
            let a: portico_model::ApiSpec = from_json(&spec)?;
            if a.visible_roles.iter().any(|r| key(r) == k) {
                used.push(format!("API `{id}`"));
            }
        }
        if !used.is_empty() {
            return Err(Error::Conflict(format!(
                "role `{name}` is in use by {}: take it away from them first",
                used.join(", ")
            )));
        }
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM roles WHERE name_key = $1").bind(&k),
            || Error::not_found(KindId::Role, name),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- tokens and sessions ----

    /// Stores a token or session of a user (its hash only).
    pub async fn create_user_token(
        &self,
        user: &str,
        via: Via,
        label: &str,
        id: &str,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<UserTokenRecord, Error> {
        let mut tx = self.write().await?;
        let action = if via == Via::Session {
            "sign_in"
        } else {
            "create_token"
        };
        tx.event(action, KindId::Token, &format!("{user}/{id}"));
        let uid: i64 = sqlx::query_scalar("SELECT id FROM users WHERE name_key = $1")
            .bind(key(user))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(KindId::User, user))?;
        let t = now();
        if via == Via::Session {
            // Expired sessions of this user go as new ones come.
            sqlx::query("DELETE FROM user_tokens WHERE user_id = $1 AND expires_at < $2")
                .bind(uid)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO user_tokens (id, user_id, kind, name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(uid)
        .bind(token_kind(via))
        .bind(label)
        .bind(hash)
        .bind(t)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UserTokenRecord {
            id: id.to_owned(),
            name: label.to_owned(),
            kind: token_kind(via),
            created_at: t,
            expires_at,
            last_used_at: None,
        })
    }

    /// A user's tokens and live sessions.
    pub async fn user_tokens(&self, user: &str) -> Result<Vec<UserTokenRecord>, Error> {
        self.user(user).await?;
        let rows = sqlx::query(
            "SELECT t.id, t.name, t.kind, t.created_at, t.expires_at, t.last_used_at FROM user_tokens t \
             JOIN users u ON u.id = t.user_id WHERE u.name_key = $1 \
             AND (t.expires_at IS NULL OR t.expires_at > $2) ORDER BY t.id",
        )
        .bind(key(user))
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(2)?;
                Ok(UserTokenRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    kind: if kind == "session" {
                        "session"
                    } else {
                        "token"
                    },
                    created_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    last_used_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Revokes one of a user's tokens or sessions.
    pub async fn revoke_user_token(&self, user: &str, id: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.event("revoke_token", KindId::Token, &format!("{user}/{id}"));
        let q = sqlx::query(
            "DELETE FROM user_tokens WHERE id = $1 AND user_id = (SELECT id FROM users WHERE name_key = $2)",
        )
        .bind(id)
        .bind(key(user));
        change_one(&mut tx, q, || Error::NotFound(format!(
                "user `{user}` has no token with id `{id}`: list them with `portico users tokens list {user}`"
            )))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a user's password (already hashed) and ends every sign-in session they have, in
    /// one transaction: answers how many sessions ended. Personal access tokens stay.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<u64, Error> {
        let mut tx = self.write().await?;
        tx.event("set_password", KindId::User, name);
        change_one(
            &mut tx,
            sqlx::query("UPDATE users SET password_hash = $1 WHERE name_key = $2")
                .bind(password_hash)
                .bind(key(name)),
            || Error::not_found(KindId::User, name),
        )
        .await?;
        let ended = sqlx::query(
            "DELETE FROM user_tokens WHERE kind = 'session' \
             AND user_id = (SELECT id FROM users WHERE name_key = $1)",
        )
        .bind(key(name))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ended)
    }

    /// Who holds a token (by its hash): the admin token, or a user's unexpired token or
    /// session (a session unused for `session_idle` has ended). Marks it used.
    pub async fn token_holder(
        &self,
        hash: &str,
        session_idle: std::time::Duration,
    ) -> Result<Option<TokenHolder>, Error> {
        let admin: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM admin_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        if let Some((id, name)) = admin {
            return Ok(Some(TokenHolder {
                name,
                roles: vec![crate::access::ADMIN.to_owned()],
                via: Via::AdminToken,
                id: id.to_string(),
            }));
        }
        let t = now();
        let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT t.id, t.kind, u.name, u.roles, COALESCE(t.last_used_at, t.created_at) \
             FROM user_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
             AND u.status = 'active'",
        )
        .bind(hash)
        .bind(t)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, kind, name, roles, last_used)) = row else {
            return Ok(None);
        };
        let idle = i64::try_from(session_idle.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        if kind == "session" && last_used < t.saturating_sub(idle) {
            // Unused too long: as good as signed out.
            return Ok(None);
        }
        // Marked to the minute (or finer, for an idle limit under two minutes).
        if last_used < t - (idle / 2).clamp(0, 60) {
            let _w = self.write.lock().await;
            sqlx::query("UPDATE user_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(t)
                .bind(&id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(TokenHolder {
            name,
            roles: from_json(&roles)?,
            via: if kind == "session" {
                Via::Session
            } else {
                Via::Token
            },
            id,
        }))
    }

    /// Whether any admin token exists.
    pub async fn has_admin_token(&self) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Stores the first start's admin token hash when the store has no admin token yet;
    /// answers whether it did (another control-plane node starting at the same moment on
    /// the same database may have stored its own first).
    pub async fn add_first_admin_token(&self, name: &str, hash: &str) -> Result<bool, Error> {
        let mut tx = self.write().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        tx.event("create", KindId::AdminToken, name);
        insert_admin_token(&mut tx, name, hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces every admin token with this one.
    pub async fn rotate_admin_token(&self, name: &str, hash: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.event("rotate", KindId::AdminToken, name);
        sqlx::query("DELETE FROM admin_tokens")
            .execute(&mut *tx)
            .await?;
        insert_admin_token(&mut tx, name, hash).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- audit ----

    /// A page of the audit log, newest first; the page key is the row number.
    pub async fn audit(
        &self,
        filter: &AuditFilter,
        page: &Page,
    ) -> Result<Vec<(String, AuditRecord)>, Error> {
        let before: i64 = match page.after.as_deref() {
            None => i64::MAX,
            Some(c) => c
                .parse()
                .map_err(|_| Error::BadRequest("cursor: not a cursor this list gave out".into()))?,
        };
        let (exact, bare) = match filter.actor.as_deref() {
            Some(a) if a.contains(':') => (Some(a.to_owned()), None),
            Some(a) => (None, Some(a.to_owned())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT id, at, actor, action, kind, object, before_version, after_version FROM audit \
             WHERE id < $1 AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR actor = 'user:' || $3 OR actor = 'admin-token:' || $3) \
             AND ($4 IS NULL OR kind = $4) AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at <= $6) \
             ORDER BY id DESC LIMIT $7",
        )
        .bind(before)
        .bind(exact)
        .bind(bare)
        .bind(&filter.kind)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page.fetch())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                Ok((
                    id.to_string(),
                    AuditRecord {
                        id,
                        at: r.try_get(1)?,
                        actor: r.try_get(2)?,
                        action: r.try_get(3)?,
                        kind: r.try_get(4)?,
                        object: r.try_get(5)?,
                        before_version: r.try_get(6)?,
                        after_version: r.try_get(7)?,
                    },
                ))
            })
            .collect()
    }
}

/// Stores an admin token's hash (the caller decides what it replaces).
async fn insert_admin_token(conn: &mut AnyConnection, name: &str, hash: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO admin_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(hash)
        .bind(now())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
