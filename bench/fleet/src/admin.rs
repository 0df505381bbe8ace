//! The admin side of a run, through the control plane's REST API with the admin token:
//! gateways and their API tokens, the API whose new revision is the measured change, and
//! the probe that times admin requests while the fleet syncs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, header};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Error;
use crate::http::{Conn, Reply};

/// The API every gateway serves; its revisions 1 and 2 differ in their endpoint.
const API: &str = "fleet-v1";

/// Calls to the admin API.
#[derive(Clone, Debug)]
pub struct Admin {
    addr: SocketAddr,
    auth: Arc<str>,
}

/// A gateway made for the run, with the API token its nodes sync with.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// Its name.
    pub name: String,
    /// Its API token.
    pub token: String,
}

/// One timed admin request.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// When it started, microseconds after the fleet's epoch.
    pub at_us: u64,
    /// How long it took.
    pub ms: f64,
    /// Which request: 0 the list of gateways, 1 one gateway.
    pub which: usize,
}

impl Admin {
    /// The admin API at `addr`, called with `token`.
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr,
            auth: format!("Bearer {token}").into(),
        }
    }

    /// A connection of its own.
    pub fn conn(&self) -> Conn {
        Conn::new(self.addr)
    }

    /// One call that must answer 2xx; answers its JSON (null when empty).
    pub async fn ok(
        &self,
        conn: &mut Conn,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<Value, Error> {
        let r = self
            .call(conn, method.clone(), path, body, if_match)
            .await?;
        if !r.status.is_success() {
            return Err(Error::Status {
                what: format!("{method} {path}"),
                status: r.status.as_u16(),
                body: r.excerpt(),
            });
        }
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        r.json()
    }

    async fn call(
        &self,
        conn: &mut Conn,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Error> {
        let mut headers = vec![(header::AUTHORIZATION, &*self.auth)];
        if let Some(m) = if_match {
            headers.push((header::IF_MATCH, m));
        }
        let body = body.map(|b| Bytes::from(b.to_string()));
        conn.send(method, path, &headers, body, Duration::from_secs(120))
            .await
    }

    /// Creates `count` gateways (`fleet-0000`, ...) and an API token for each, four
    /// requests at a time.
    pub async fn gateways(&self, count: usize) -> Result<Vec<Gateway>, Error> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (admin, next) = (self.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = admin.conn();
                let mut made = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, Error>(made);
                    }
                    let name = format!("fleet-{i:04}");
                    let body = json!({"name": name, "type": "production"});
                    admin
                        .ok(
                            &mut conn,
                            Method::POST,
                            "/api/v1/gateways",
                            Some(body),
                            None,
                        )
                        .await?;
                    let path = format!("/api/v1/gateways/{name}/token");
                    let v = admin.ok(&mut conn, Method::POST, &path, None, None).await?;
                    let token = v["api_token"].as_str().unwrap_or_default().to_owned();
                    if token.is_empty() {
                        return Err(Error::Run(format!("{path} answered no api_token: {v}")));
                    }
                    made.push((i, Gateway { name, token }));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| Error::Run(e.to_string()))??);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, g)| g).collect())
    }

    /// Creates the API with revisions 1 and 2 (another endpoint) and deploys revision 1 to
    /// every gateway.
    pub async fn prepare(&self, gateways: &[Gateway]) -> Result<(), Error> {
        let mut conn = self.conn();
        let def = |port: u16| {
            json!({"name": "fleet", "version": "v1", "context": "/fleet",
                   "production_endpoints": [format!("http://127.0.0.1:{port}")]})
        };
        self.ok(&mut conn, Method::POST, "/api/v1/apis", Some(def(9)), None)
            .await?;
        let revisions = format!("/api/v1/apis/{API}/revisions");
        self.ok(&mut conn, Method::POST, &revisions, None, None)
            .await?;
        let path = format!("/api/v1/apis/{API}");
        let v = self.ok(&mut conn, Method::GET, &path, None, None).await?;
        let etag = format!("\"{}\"", v["version"].as_i64().unwrap_or(0));
        self.ok(&mut conn, Method::PUT, &path, Some(def(10)), Some(&etag))
            .await?;
        self.ok(&mut conn, Method::POST, &revisions, None, None)
            .await?;
        self.deploy(&mut conn, 1, gateways).await.map(|_| ())
    }

    /// Deploys `revision` of the API to every gateway in one request; answers each
    /// gateway's snapshot version after it.
    pub async fn deploy(
        &self,
        conn: &mut Conn,
        revision: u32,
        gateways: &[Gateway],
    ) -> Result<HashMap<String, u64>, Error> {
        let names: Vec<&str> = gateways.iter().map(|g| g.name.as_str()).collect();
        let body = json!({"revision": revision, "gateways": names});
        let path = format!("/api/v1/apis/{API}/deployments");
        let v = self.ok(conn, Method::POST, &path, Some(body), None).await?;
        let targets = v["targets"].as_array().cloned().unwrap_or_default();
        let versions: HashMap<String, u64> = targets
            .iter()
            .filter_map(|t| {
                Some((
                    t["gateway"].as_str()?.to_owned(),
                    t["snapshot_version"].as_u64()?,
                ))
            })
            .collect();
        if versions.len() != gateways.len() {
            return Err(Error::Run(format!(
                "the deploy answered {} target versions for {} gateways",
                versions.len(),
                gateways.len()
            )));
        }
        Ok(versions)
    }

    /// `GET /api/v1/status`: every gateway, its snapshot version and hash, and its nodes.
    pub async fn status(&self) -> Result<Value, Error> {
        let mut conn = self.conn();
        self.ok(&mut conn, Method::GET, "/api/v1/status", None, None)
            .await
    }

    /// Every 100 ms until `stop`: `GET /api/v1/gateways` (the first page) and `GET` of
    /// one gateway, each timed, on one kept-alive connection (an admin's console).
    pub async fn probe(
        self,
        one: String,
        epoch: Instant,
        out: Arc<Mutex<Vec<Timing>>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut conn = self.conn();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let paths = [
            "/api/v1/gateways".to_owned(),
            format!("/api/v1/gateways/{one}"),
        ];
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return Ok(()),
            }
            for (which, path) in paths.iter().enumerate() {
                let start = Instant::now();
                self.ok(&mut conn, Method::GET, path, None, None).await?;
                let t = Timing {
                    at_us: start.duration_since(epoch).as_micros() as u64,
                    ms: start.elapsed().as_secs_f64() * 1000.0,
                    which,
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(t);
            }
        }
    }
}
