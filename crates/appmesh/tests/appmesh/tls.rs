//! TLS: listener certificates from files, ACM and SDS; STRICT, PERMISSIVE and DISABLED;
//! client certificates; TLS towards the backends.

use portico_appmesh::{Error, Outcome};

use crate::common::*;

#[test]
fn every_tls_mode_and_certificate_source() {
    let imp = import_fixture("tls");
    let gw = |name: &str| {
        imp.objects
            .gateways
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // Files: carried, with client certificates asked for.
    let tls = gw("tls-file").listeners[0].tls.as_ref().expect("TLS");
    assert_eq!(
        tls.certificates[0].cert_file.as_deref(),
        Some("/etc/envoy/certs/gw.pem")
    );
    assert_eq!(
        tls.certificates[0].key_file.as_deref(),
        Some("/etc/envoy/certs/gw.key")
    );
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some("/etc/envoy/certs/clients-ca.pem")
    );
    assert!(tls.client_cert_required);
    reported(&imp, Outcome::Changed, ".tls.certificate", "must exist");
    reported(
        &imp,
        Outcome::NotCarried,
        ".validation.subjectAlternativeNames",
        "does not check subject alternative names",
    );
    let file = imp.gateway_file("tls-file").expect("a gateway file");
    assert!(file.listeners[0].tls.is_some());

    // ACM: a TLS listener waiting for an uploaded certificate, and a reference to it.
    let tls = gw("tls-acm").listeners[0]
        .tls
        .as_ref()
        .expect("still TLS, never plaintext");
    assert!(tls.certificates.is_empty());
    reported(
        &imp,
        Outcome::NotCarried,
        ".tls.certificate",
        "portico certificates upload --name acm-12345678-90ab-cdef-1234-567890abcdef",
    );
    assert_eq!(imp.objects.certificates.len(), 1);
    assert_eq!(
        imp.objects.certificates[0].name,
        "acm-12345678-90ab-cdef-1234-567890abcdef"
    );
    assert!(matches!(
        imp.gateway_file("tls-acm"),
        Err(Error::Incomplete { .. })
    ));

    // SDS: the same, without a certificate to name.
    assert!(
        gw("tls-sds").listeners[0]
            .tls
            .as_ref()
            .is_some_and(|t| t.certificates.is_empty())
    );
    reported(
        &imp,
        Outcome::NotCarried,
        ".tls.certificate",
        "SDS secret `gateway-cert`",
    );
    reported(&imp, Outcome::NotCarried, ".validation.trust", "SDS trust");
    assert!(matches!(
        imp.gateway_file("tls-sds"),
        Err(Error::Incomplete { .. })
    ));

    // PERMISSIVE: TLS only, reported.
    assert!(gw("tls-permissive").listeners[0].tls.is_some());
    reported(&imp, Outcome::Changed, ".tls.mode", "plaintext clients");

    // DISABLED: no TLS.
    assert!(gw("tls-disabled").listeners[0].tls.is_none());
    reported(&imp, Outcome::Carried, ".tls", "DISABLED");
}

#[test]
fn tls_towards_backends_and_the_scheme_of_router_routes() {
    let imp = import_fixture("tls");
    // Through the TLS gateway, the router route for https is carried; its scheme always holds.
    let r = route(&imp, "tls-file.app.only-https");
    assert!(r.listeners.is_empty());
    // Through the plaintext gateway it never matches.
    assert!(
        imp.objects
            .routes
            .iter()
            .all(|r| r.name != "backend-tls.app.only-https")
    );
    reported(
        &imp,
        Outcome::NotCarried,
        "$[4].spec.httpRoute",
        "scheme https",
    );
    // backend-tls's client policy: TLS on the service its routes reach, with the system's CAs.
    let fallback = route(&imp, "backend-tls.app");
    assert!(fallback.fixed_response.is_some());
    reported(&imp, Outcome::Changed, ".validation.trust", "system's CAs");
    reported(
        &imp,
        Outcome::NotCarried,
        ".clientPolicy.tls.certificate",
        "SDS secret `gateway-client`",
    );
    reported(
        &imp,
        Outcome::Changed,
        ".subjectAlternativeNames",
        "2 names",
    );
}
