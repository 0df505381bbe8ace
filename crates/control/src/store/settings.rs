//! Settings the control plane keeps for itself in the database, shared by every
//! control-plane node: the key check, the admin listener's CA.

use super::Store;
use crate::error::Error;

impl Store {
    /// Checks that `sealer` holds the key this database's secrets are sealed with (the
    /// first start records a known text sealed with it): a control-plane node given
    /// another key refuses to start rather than write secrets nobody else can open.
    pub async fn check_key(
        &self,
        sealer: &crate::secrets::Sealer,
        key_file: &std::path::Path,
    ) -> Result<(), Error> {
        const KNOWN: &str = "portico key check";
        match self.setting("key_check").await? {
            Some(sealed) if sealer.open(&sealed).ok().as_deref() == Some(KNOWN) => Ok(()),
            Some(_) => Err(Error::Internal(format!(
                "the secret key in {} is not the one this database's secrets are sealed with: \
                 give every control-plane node the same key file (--secret-key-file)",
                key_file.display()
            ))),
            None => {
                self.add_setting("key_check", &sealer.seal(KNOWN)?).await?;
                // Another node may have won the race with its own key: check again.
                Box::pin(self.check_key(sealer, key_file)).await
            }
        }
    }

    /// A setting's value, when set.
    pub(crate) async fn setting(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets a setting unless it is set already (the first node to set it wins; read it
    /// back to learn which value did).
    pub(crate) async fn add_setting(&self, name: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
