//! A router route's retry policy as the retries of the services it sends to.

use portico_model::Retries;

use crate::mesh::Cx;
use crate::mesh::router::RetryPolicy;

/// A router route's retry policy as a service's retries.
pub(crate) fn retries(p: &RetryPolicy, cx: &mut Cx<'_>) -> Retries {
    let mut r = Retries {
        attempts: p.max_retries.min(10),
        ..Retries::default()
    };
    if p.max_retries > 10 {
        cx.changed(
            format!("{}.maxRetries", p.at),
            format!("{} retries: Portico allows at most 10", p.max_retries),
        );
    }
    let mut statuses = Vec::new();
    for (at, e) in &p.http_events {
        match e.as_str() {
            "server-error" => statuses.extend(500..=599),
            "gateway-error" => statuses.extend([502, 503, 504]),
            "client-error" => statuses.push(409),
            _ => cx.changed(
                at.clone(),
                "stream-error: Portico retries requests whose connection failed before anything was sent, always; a stream reset midway is not retried",
            ),
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    if !statuses.is_empty() {
        cx.changed(
            format!("{}.httpRetryEvents", p.at),
            format!(
                "-> retries.statuses ({} statuses): Portico retries them for idempotent requests without a body only; Envoy retries any request",
                statuses.len()
            ),
        );
    }
    r.statuses = statuses;
    for (at, _) in &p.tcp_events {
        cx.changed(
            at.clone(),
            "connection-error: Portico always retries a request whose connection failed before anything was sent",
        );
    }
    for (at, e) in &p.grpc_events {
        cx.not_carried(
            at.clone(),
            format!(
                "gRPC status {e}: Portico retries by HTTP status and connect failure, not by gRPC status"
            ),
        );
    }
    if let Some((at, _)) = &p.per_retry {
        cx.not_carried(
            at.clone(),
            "Portico has no per-try timeout: each try may take the whole request timeout",
        );
    }
    cx.carried(
        p.at.clone(),
        format!("-> retries.attempts {} on the target services", r.attempts),
    );
    r
}
