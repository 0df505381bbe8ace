//! certs

use super::*;
// ---- uploaded certificates ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateUpload {
    name: String,
    cert_pem: String,
    key_pem: String,
}

pub(super) async fn list_certificates(State(st): St, Query(q): Pq) -> Res {
    paged(&q, st.store.certificates().await?, |c| {
        c.name.to_ascii_lowercase()
    })
}

/// Checks an uploaded chain and key: they parse, belong together and are not expired.
/// Answers the certificate's DNS names and its expiry (Unix seconds).
pub(super) fn inspect_certificate(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<String>, i64), Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let field = |f: &str, m: String| Error::Invalid(vec![FieldError::new(f, m)]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| field("cert_pem", format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(field("cert_pem", "no certificate in it".into()));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| field("key_pem", format!("not a PEM private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| field("key_pem", format!("unsupported key: {e}")))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| {
            field(
                "key_pem",
                "this key does not belong to the certificate".into(),
            )
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| field("cert_pem", format!("the certificate does not parse: {e}")))?;
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now() {
        return Err(field(
            "cert_pem",
            format!("the certificate expired on {}", cert.validity().not_after),
        ));
    }
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                hosts.push(d.to_ascii_lowercase());
            }
        }
    }
    if hosts.is_empty() {
        return Err(field(
            "cert_pem",
            "the certificate names no DNS host (subjectAltName)".into(),
        ));
    }
    Ok((hosts, not_after))
}

pub(super) async fn upload_certificate(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: CertificateUpload = body(&bytes)?;
    let rec = add_certificate(&st, &req.name, &req.cert_pem, &req.key_pem).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&rec))).into_response())
}

/// Checks a chain and key and stores them, the key sealed: the API's upload and the
/// console's form.
pub(crate) async fn add_certificate(
    st: &ControlPlane,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<crate::store::CertificateRecord, Error> {
    if name.is_empty() || name.chars().count() > limits::NAME {
        return Err(Error::Invalid(vec![FieldError::new(
            "name",
            format!("1 to {} characters", limits::NAME),
        )]));
    }
    let (hosts, not_after) = inspect_certificate(cert_pem, key_pem)?;
    let sealed = st.sealer.seal(key_pem)?;
    let (rec, _) = st
        .store
        .add_certificate(name, &hosts, cert_pem, &sealed, not_after)
        .await?;
    tracing::info!(name = %rec.name, hosts = ?rec.hosts, "certificate uploaded");
    Ok(rec)
}

pub(super) async fn delete_certificate(State(st): St, Path(name): Path<String>) -> Res {
    st.store.delete_certificate(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- automatic certificates ----

pub(super) async fn list_acme_hosts(State(st): St, Query(q): Pq) -> Res {
    paged(&q, st.store.acme_hosts().await?, |h| h.host.clone())
}

/// Orders a host's certificate now: an early renewal, or a retry without the back-off.
pub(super) async fn order_acme_host(State(st): St, Path(host): Path<String>) -> Res {
    st.store.acme_order_now(&host).await?;
    st.hub.changed.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "host": host.to_ascii_lowercase(), "state": "ordering" })),
    )
        .into_response())
}
