//! Failed sign-ins shared by every control-plane node (PostgreSQL): the back-off of
//! [`crate::signin::Throttle::Shared`] counts them here.

use super::Store;
use crate::error::Error;

impl Store {
    /// Failed sign-ins recorded for these keys: (key, count, last failure's Unix second).
    pub async fn signin_failures(
        &self,
        user: &str,
        addr: Option<String>,
    ) -> Result<Vec<(String, u32, i64)>, Error> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT key, count, last FROM signin_failures WHERE key = $1 OR key = $2",
        )
        .bind(user)
        .bind(addr.unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(k, c, l)| (k, c.clamp(0, i64::from(u32::MAX)) as u32, l))
            .collect())
    }

    /// Counts a failed sign-in for these keys (a count older than `forget_after` seconds
    /// starts again from one).
    pub async fn signin_failed(
        &self,
        user: &str,
        addr: Option<String>,
        forget_after: i64,
    ) -> Result<(), Error> {
        let t = super::now();
        for key in std::iter::once(user.to_owned()).chain(addr) {
            sqlx::query(
                "INSERT INTO signin_failures (key, count, last) VALUES ($1, 1, $2) \
                 ON CONFLICT (key) DO UPDATE SET \
                 count = CASE WHEN signin_failures.last < $3 THEN 1 ELSE signin_failures.count + 1 END, \
                 last = $2",
            )
            .bind(key)
            .bind(t)
            .bind(t - forget_after)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Forgets a key's failed sign-ins.
    pub async fn signin_succeeded(&self, user: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM signin_failures WHERE key = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets failed sign-ins older than `after` seconds; answers how many.
    pub async fn forget_signin_failures(&self, after: i64) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM signin_failures WHERE last < $1")
            .bind(super::now() - after)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
