//! People who get tokens with the password grant.

use serde::Serialize;

use super::{Store, key, now};
use crate::error::Error;

/// A user, without the password hash.
#[derive(Clone, Debug, Serialize)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl Store {
    /// Every user.
    pub async fn users(&self) -> Result<Vec<UserRecord>, Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, created_at FROM users ORDER BY name_key")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, created_at)| UserRecord { name, created_at })
            .collect())
    }

    /// Creates a user with an already hashed password.
    pub async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserRecord, Error> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "INSERT INTO users (name_key, name, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(key(name))
        .bind(name)
        .bind(password_hash)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Conflict(format!(
                "a user named `{name}` exists already (names are case-insensitive)"
            )));
        }
        Ok(UserRecord {
            name: name.to_owned(),
            created_at: now(),
        })
    }

    /// A user's password hash.
    pub async fn password_hash(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        Ok(
            sqlx::query_as("SELECT name, password_hash FROM users WHERE name_key = $1")
                .bind(key(name))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes a user.
    pub async fn delete_user(&self, name: &str) -> Result<(), Error> {
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM users WHERE name_key = $1")
            .bind(key(name))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user", name));
        }
        Ok(())
    }
}
