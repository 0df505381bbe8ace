//! Signing in from the command line: `portico login --user NAME` (a session from a name and
//! password), `portico whoami` and `portico logout`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::{Client, Output, Saved, cell, credentials_path, utc};

/// `portico login --user NAME`: signs in with the password and stores URL and session token
/// (mode 0600).
pub async fn login_user(url: &str, name: &str, ca_file: Option<&str>) -> anyhow::Result<()> {
    let password = password()?;
    if password.is_empty() {
        bail!("no password for `{name}`: set PORTICO_USER_PASSWORD or write it on standard input");
    }
    let client = Client::new(
        url.to_owned(),
        String::new(),
        ca_file.map(ToOwned::to_owned),
        Output::Table,
    )?;
    let answer = client
        .try_call(
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"name": name, "password": password})),
        )
        .await?;
    if !answer.status.is_success() {
        bail!("cannot sign in as `{name}`: {}", answer.message());
    }
    let v = answer.value;
    let Some(token) = v["token"].as_str().filter(|t| !t.is_empty()) else {
        bail!(
            "the control plane at {url} answered the sign-in without a token (is it older than this CLI?)"
        );
    };
    let path = Saved {
        url: url.to_owned(),
        token: token.to_owned(),
        ca_file: ca_file.map(ToOwned::to_owned),
    }
    .store()?;
    let roles = match cell(&v, "/user/roles") {
        r if r.is_empty() || r == "-" => "none".to_owned(),
        r => r.replace(',', ", "),
    };
    let ends = match v.get("expires_at") {
        None | Some(Value::Null) => "the session has no set end".to_owned(),
        Some(at) => format!("the session ends {}", moment(at)),
    };
    crate::cli::out!(
        "Signed in as {} (roles: {roles}); {ends}. Credentials saved in {}.",
        v["user"]["name"].as_str().unwrap_or(name),
        path.display()
    );
    Ok(())
}

/// `portico whoami`
pub async fn whoami(c: &Client) -> anyhow::Result<()> {
    c.print(
        &c.get("/api/v1/auth/whoami").await?,
        &[("NAME", "/name"), ("ROLES", "/roles"), ("VIA", "/via")],
        None,
    );
    Ok(())
}

/// `portico logout`: ends the saved session on the control plane and forgets the saved
/// credentials. A refusal (the token is no session, or it has ended) still forgets them; a
/// control plane that cannot be reached keeps them, so the logout can be retried.
pub async fn logout(
    url: Option<String>,
    token: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let path = credentials_path();
    let saved = Saved::load().is_some();
    let c = match (saved, token) {
        // The saved login's own URL and token, never the saved token sent to another URL.
        (true, _) => Client::connect(None, None, output)?,
        (false, Some(t)) => Client::connect(url, Some(t), output)?,
        (false, None) => {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
            crate::cli::out!("Not signed in: nothing is saved in {}.", path.display());
            return Ok(());
        }
    };
    let answer = match c.try_call(Method::POST, "/api/v1/auth/logout", None).await {
        Ok(a) => a,
        Err(e) if saved => bail!(
            "{e:#}\nThe saved credentials were kept: run `portico logout` again once the control plane answers."
        ),
        Err(e) => return Err(e),
    };
    if answer.status.is_server_error() {
        bail!(
            "the control plane could not end the session: {}\nThe saved credentials were kept: run `portico logout` again.",
            answer.message()
        );
    }
    let ended = if answer.status.is_success() {
        "the session has ended"
    } else if answer.status == StatusCode::UNAUTHORIZED {
        "the session had already ended"
    } else {
        "the token is no session and stays valid"
    };
    if saved {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        c.done(format!("Signed out ({ended}); removed {}.", path.display()));
    } else {
        c.done(format!("Signed out ({ended})."));
    }
    Ok(())
}

/// The password: from PORTICO_USER_PASSWORD, else the first line of standard input.
pub(crate) fn password() -> anyhow::Result<String> {
    // Never on the command line, where `ps` shows it.
    Ok(match std::env::var("PORTICO_USER_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    })
}

/// A time from the API (Unix seconds, or text such as RFC 3339) as `at 2026-01-02 03:04:05
/// UTC (in 12 h)`.
pub(crate) fn moment(at: &Value) -> String {
    match at.as_i64() {
        Some(secs) => format!("at {} UTC ({})", utc(secs), relative(secs - now())),
        None => format!(
            "at {}",
            at.as_str().map_or_else(|| at.to_string(), str::to_owned)
        ),
    }
}

/// Seconds from now as `in 12 h` or `3 d ago`, rounded in the largest unit that fits.
fn relative(delta: i64) -> String {
    let n = delta.unsigned_abs();
    let (per, unit) = match n {
        0..60 => (1, "s"),
        60..3_600 => (60, "min"),
        3_600..86_400 => (3_600, "h"),
        _ => (86_400, "d"),
    };
    let amount = format!("{} {unit}", (n + per / 2) / per);
    if delta < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        assert_eq!(super::relative(45), "in 45 s");
        assert_eq!(super::relative(43_200), "in 12 h");
        assert_eq!(super::relative(43_199), "in 12 h");
        assert_eq!(super::relative(-3 * 86_400), "3 d ago");
    }
}
