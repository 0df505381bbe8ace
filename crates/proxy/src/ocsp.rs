//! OCSP stapling: for every served certificate that names an OCSP responder (its Authority
//! Information Access) and comes with its issuer in the chain, the gateway fetches a
//! response in the background, staples it to handshakes, and fetches again halfway to the
//! response's `nextUpdate` (every 12 hours when it has none). Only a `good` answer about the
//! certificate asked for is stapled (its signature is left to the client, which checks it
//! against the issuer it already trusts). Failures are retried with
//! back-off while the last good response keeps being stapled until it expires. A response
//! can also be given as a file per certificate (`ocsp_file`), as nginx's
//! `ssl_stapling_file`. Staples live across reloads: they belong to the gateway, not to a
//! Snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

/// The OCSP access method in an Authority Information Access extension.
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
/// Refresh interval for responses without `nextUpdate`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(12 * 3600);
/// First retry after a failed fetch; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// A certificate waiting for (or holding) a staple.
#[derive(Debug)]
struct Want {
    base: Arc<CertifiedKey>,
    url: String,
    request: Vec<u8>,
    /// The CertID asked about (DER content), which the answer must name.
    cert_id: Vec<u8>,
    /// Unix seconds of the next fetch.
    due: u64,
    failures: u32,
    /// Unix seconds after which the current staple must not be served.
    expires: Option<u64>,
}

/// Fetches and holds OCSP responses for a gateway's certificates.
#[derive(Debug, Default)]
pub struct Stapler {
    staples: ArcSwap<HashMap<u64, Arc<CertifiedKey>>>,
    wanted: Mutex<HashMap<u64, Want>>,
    wake: Notify,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A certificate's identity for stapling: a hash of its leaf.
fn leaf_id(ck: &CertifiedKey) -> u64 {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(ck.cert.first().map_or(&[][..], |c| c));
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

impl Stapler {
    /// Registers a served certificate; answers its id when it can be stapled (an OCSP URL
    /// and the issuer in the chain), so the resolver asks for its staple.
    pub fn register(&self, ck: &Arc<CertifiedKey>) -> Option<u64> {
        let (url, request, cert_id) = match ocsp_request(ck) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "certificate not stapled");
                return None;
            }
        };
        let id = leaf_id(ck);
        let mut wanted = self.lock();
        match wanted.get_mut(&id) {
            // The same certificate again (a reload): keep its schedule and staple, but the
            // new key object (its signer may be a new one).
            Some(w) => w.base = ck.clone(),
            None => {
                wanted.insert(
                    id,
                    Want {
                        base: ck.clone(),
                        url,
                        request,
                        cert_id,
                        due: 0,
                        failures: 0,
                        expires: None,
                    },
                );
                self.wake.notify_one();
            }
        }
        Some(id)
    }

    /// Forgets certificates no longer served.
    pub fn retain(&self, ids: &[u64]) {
        self.lock().retain(|id, _| ids.contains(id));
        let current = self.staples.load();
        if current.keys().any(|id| !ids.contains(id)) {
            let kept = current
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, ck)| (*id, ck.clone()))
                .collect();
            self.staples.store(Arc::new(kept));
        }
    }

    /// The certificate with its staple, when there is a current one.
    #[inline]
    pub fn get(&self, id: u64) -> Option<Arc<CertifiedKey>> {
        self.staples.load().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Want>> {
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches due responses until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "OCSP stapling off: no HTTP client");
                return;
            }
        };
        loop {
            let t = now();
            let due: Vec<(u64, String, Vec<u8>, Vec<u8>)> = self
                .lock()
                .iter()
                .filter(|(_, w)| w.due <= t)
                .map(|(id, w)| (*id, w.url.clone(), w.request.clone(), w.cert_id.clone()))
                .collect();
            for (id, url, request, cert_id) in due {
                let result = fetch(&client, &url, request)
                    .await
                    .and_then(|(der, status)| {
                        if status.cert_id != cert_id {
                            return Err("the response is about another certificate".to_owned());
                        }
                        if !status.good {
                            return Err(if status.revoked {
                                "the responder says the certificate is REVOKED: replace it"
                                    .to_owned()
                            } else {
                                "the responder does not know the certificate".to_owned()
                            });
                        }
                        Ok((der, status))
                    });
                self.record(id, &url, result);
            }
            self.expire();
            let next = self.lock().values().map(|w| w.due).min();
            let wait = next.map_or(3600, |d| d.saturating_sub(now()).clamp(1, 3600));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(wait)) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    fn record(&self, id: u64, url: &str, result: Result<(Vec<u8>, Status), String>) {
        let t = now();
        let mut wanted = self.lock();
        let Some(w) = wanted.get_mut(&id) else {
            return;
        };
        match result {
            Ok((der, status)) => {
                let refresh = match status.next_update {
                    Some(next) if next > status.this_update => {
                        status.this_update + (next - status.this_update) / 2
                    }
                    _ => t + DEFAULT_REFRESH.as_secs(),
                };
                w.due = refresh.max(t + 60);
                w.failures = 0;
                w.expires = status.next_update;
                let mut stapled = (*w.base).clone();
                stapled.ocsp = Some(der);
                let mut map = (**self.staples.load()).clone();
                map.insert(id, Arc::new(stapled));
                self.staples.store(Arc::new(map));
                tracing::info!(responder = %url, next_fetch = w.due, "OCSP response stapled");
            }
            Err(e) => {
                w.failures += 1;
                let delay = FIRST_RETRY
                    .saturating_mul(1 << (w.failures - 1).min(10))
                    .min(MAX_RETRY);
                w.due = t + delay.as_secs();
                tracing::warn!(responder = %url, error = %e, retry_in_s = delay.as_secs(), "OCSP fetch failed");
            }
        }
    }

    /// Stops stapling responses past their `nextUpdate`.
    fn expire(&self) {
        let t = now();
        let stale: Vec<u64> = self
            .lock()
            .iter()
            .filter(|(_, w)| w.expires.is_some_and(|e| e <= t))
            .map(|(id, _)| *id)
            .collect();
        if stale.iter().any(|id| self.staples.load().contains_key(id)) {
            let map = self
                .staples
                .load()
                .iter()
                .filter(|(id, _)| !stale.contains(id))
                .map(|(id, ck)| (*id, ck.clone()))
                .collect();
            self.staples.store(Arc::new(map));
        }
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    request: Vec<u8>,
) -> Result<(Vec<u8>, Status), String> {
    let resp = client
        .post(url)
        .header("content-type", "application/ocsp-request")
        .body(request)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let der = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
    let status = parse_response(&der)?;
    Ok((der, status))
}

/// The OCSP responder URL and a DER OCSP request for a certificate whose chain carries its
/// issuer; `None` when the certificate names no responder or has no issuer in the chain.
#[allow(clippy::type_complexity)] // (responder URL, request, CertID content)
fn ocsp_request(ck: &CertifiedKey) -> Result<Option<(String, Vec<u8>, Vec<u8>)>, String> {
    let (Some(leaf), Some(issuer)) = (ck.cert.first(), ck.cert.get(1)) else {
        return Ok(None);
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer).map_err(|e| e.to_string())?;
    let mut url = None;
    for ext in leaf.extensions() {
        if let x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) =
            ext.parsed_extension()
        {
            for d in &aia.accessdescs {
                if d.access_method.to_id_string() == OID_AD_OCSP
                    && let x509_parser::extensions::GeneralName::URI(u) = d.access_location
                    && u.starts_with("http://")
                {
                    url = Some(u.to_owned());
                }
            }
        }
    }
    let Some(url) = url else {
        return Ok(None);
    };
    let sha1 = |b: &[u8]| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let name_hash = sha1(issuer.tbs_certificate.subject.as_raw());
    let key_hash = sha1(&issuer.tbs_certificate.subject_pki.subject_public_key.data);
    let serial = leaf.tbs_certificate.raw_serial();
    // CertID: sha1 algorithm (OID 1.3.14.3.2.26, NULL parameters), the two hashes, serial.
    let algorithm = der(
        0x30,
        &[der(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), der(0x05, &[])].concat(),
    );
    let cert_id_content = [
        algorithm,
        der(0x04, &name_hash),
        der(0x04, &key_hash),
        der(0x02, serial),
    ]
    .concat();
    let cert_id = der(0x30, &cert_id_content);
    // OCSPRequest { TBSRequest { requestList { Request { CertID } } } }
    let request = der(0x30, &der(0x30, &der(0x30, &der(0x30, &cert_id))));
    Ok(Some((url, request, cert_id_content)))
}

/// One DER element.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Splits one DER element off `input`: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// What a response says about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    /// The CertID it answers about (DER content).
    cert_id: Vec<u8>,
    /// `good`.
    good: bool,
    /// `revoked`.
    revoked: bool,
    this_update: u64,
    next_update: Option<u64>,
}

/// Checks that `der` is a successful OCSP response (for `ocsp_file`).
pub fn check_response(der: &[u8]) -> Result<(), String> {
    parse_response(der).map(|_| ())
}

/// Checks an OCSP response is successful and reads its first single response.
fn parse_response(der: &[u8]) -> Result<Status, String> {
    let bad = |what: &str| format!("malformed OCSP response ({what})");
    let (_, resp, _) = tlv(der)
        .filter(|t| t.0 == 0x30)
        .ok_or_else(|| bad("outer"))?;
    let (tag, status, rest) = tlv(resp).ok_or_else(|| bad("status"))?;
    if tag != 0x0a || status != [0] {
        return Err(format!(
            "the responder answered status {:?} instead of successful",
            status.first()
        ));
    }
    let (_, bytes, _) = tlv(rest)
        .filter(|t| t.0 == 0xa0)
        .ok_or_else(|| bad("responseBytes"))?;
    let (_, bytes, _) = tlv(bytes)
        .filter(|t| t.0 == 0x30)
        .ok_or_else(|| bad("responseBytes"))?;
    let (_, _oid, rest) = tlv(bytes)
        .filter(|t| t.0 == 0x06)
        .ok_or_else(|| bad("type"))?;
    let (_, basic, _) = tlv(rest)
        .filter(|t| t.0 == 0x04)
        .ok_or_else(|| bad("response"))?;
    let (_, basic, _) = tlv(basic)
        .filter(|t| t.0 == 0x30)
        .ok_or_else(|| bad("basic"))?;
    let (_, mut tbs, _) = tlv(basic)
        .filter(|t| t.0 == 0x30)
        .ok_or_else(|| bad("tbs"))?;
    // Skip version, responderID and producedAt up to the responses.
    let responses = loop {
        let (tag, content, rest) = tlv(tbs).ok_or_else(|| bad("responses"))?;
        if tag == 0x30 {
            break content;
        }
        tbs = rest;
    };
    let (_, single, _) = tlv(responses)
        .filter(|t| t.0 == 0x30)
        .ok_or_else(|| bad("single"))?;
    let (_, cert_id, rest) = tlv(single).ok_or_else(|| bad("certID"))?;
    let (status_tag, _, rest) = tlv(rest).ok_or_else(|| bad("certStatus"))?;
    let (_, this_update, rest) = tlv(rest)
        .filter(|t| t.0 == 0x18)
        .ok_or_else(|| bad("thisUpdate"))?;
    let next_update = match tlv(rest) {
        Some((0xa0, inner, _)) => tlv(inner)
            .filter(|t| t.0 == 0x18)
            .and_then(|(_, t, _)| generalized_time(t)),
        _ => None,
    };
    Ok(Status {
        cert_id: cert_id.to_vec(),
        good: status_tag == 0x80,
        revoked: status_tag == 0xa1,
        this_update: generalized_time(this_update).ok_or_else(|| bad("thisUpdate"))?,
        next_update,
    })
}

/// `YYYYMMDDHHMMSS[.fff]Z` as Unix seconds.
fn generalized_time(t: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(t).ok()?;
    if s.len() < 15 || !s.ends_with('Z') {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(8, 10)?, n(10, 12)?, n(12, 14)?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times_read_as_unix_seconds() {
        assert_eq!(generalized_time(b"19700101000000Z"), Some(0));
        assert_eq!(generalized_time(b"20000229000000Z"), Some(951_782_400));
        assert_eq!(generalized_time(b"20261129183511Z"), Some(1_795_977_311));
        assert_eq!(generalized_time(b"2026112918"), None);
    }

    #[test]
    fn der_lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; n];
            let e = der(0x04, &content);
            let (tag, c, rest) = tlv(&e).unwrap_or_else(|| panic!("{n}"));
            assert_eq!((tag, c.len(), rest.len()), (0x04, n, 0));
        }
    }

    #[test]
    fn unsuccessful_or_garbled_responses_are_refused() {
        // tryLater (3).
        assert!(parse_response(&[0x30, 0x03, 0x0a, 0x01, 0x03]).is_err());
        assert!(parse_response(&[0x30, 0x80]).is_err());
        assert!(parse_response(&[]).is_err());
    }
}
