//! Route lookup. Built once per Snapshot; a lookup costs a few hash probes and one walk of
//! the path through a radix trie, flat in the number of routes. A change to some routes
//! rebuilds only the tables of the hosts they were or are on ([`Router::update`]): the
//! others are shared with the router before.
//!
//! Precedence, highest first (documented in the README):
//! 1. explicit `priority`, lower first; any priority before none;
//! 2. host: an exact host, then wildcard suffixes longest first, then routes without hosts;
//! 3. path: exact, then prefixes longest first, then regex, then no path condition;
//! 4. a method condition; more header conditions; more query conditions;
//! 5. definition order.

mod trie;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use portico_model::validate::{HeaderCondition, QueryCondition, anchored_regex};
use portico_model::{GrpcMatch, PathMatch, RouteMatch};
use regex::Regex;

use crate::Error;
use trie::Trie;

/// What the router looks at in a request. `host` is lower-case without port; `path` is
/// normalized and without query.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Host, lower-case, without port.
    pub host: &'a str,
    /// Normalized path.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request is gRPC (`content-type: application/grpc*`).
    pub grpc: bool,
}

/// A route added or replaced (`Some((priority, match))`) or removed (`None`), by id.
pub type RouteChange<'a> = (u32, Option<(Option<u32>, &'a RouteMatch)>);

/// The route table of one listener.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, Arc<Table>>,
    /// Keyed by the suffix with its leading dot: `*.example.com` is stored as `.example.com`.
    wildcard_hosts: HashMap<Box<str>, Arc<Table>>,
    any_host: Arc<Table>,
    /// Each route's compiled conditions and where it is, by route id.
    placed: Vec<Option<Arc<Placed>>>,
}

/// One route compiled for the tables: its conditions, its path slot, its precedence key
/// without host and order, and the tables it is in.
#[derive(Debug)]
struct Placed {
    conds: Arc<Conditions>,
    slot: PathSlot,
    tail: u128,
    homes: Vec<(TableKey, u128)>,
}

/// One route's place in a table, with its precedence key (lower wins).
#[derive(Clone, Debug)]
struct Entry {
    key: u128,
    route: u32,
    conds: Arc<Conditions>,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<Box<str>, Vec<Entry>>,
    prefixes: Trie,
    regex: Vec<Entry>,
    rest: Vec<Entry>,
    /// The routes in it.
    members: Vec<u32>,
}

/// Everything a route checks besides host and (non-regex) path.
#[derive(Debug, Default)]
struct Conditions {
    path_regex: Option<Regex>,
    methods: Vec<Method>,
    headers: Vec<HeaderCond>,
    query: Vec<QueryCond>,
    grpc: bool,
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    kind: HeaderKind,
    invert: bool,
}

#[derive(Debug)]
enum HeaderKind {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Regex(Regex),
    Present,
    Absent,
}

#[derive(Debug)]
struct QueryCond {
    name: Box<str>,
    kind: QueryKind,
}

#[derive(Debug)]
enum QueryKind {
    Exact(Box<str>),
    Regex(Regex),
    Present,
}

/// Where a route's path condition puts it.
#[derive(Debug)]
enum PathSlot {
    Exact(String),
    Prefix(String, bool),
    Regex,
    Rest,
}

const HOST_ANY: u128 = 0xFFFF;
const PATH_REGEX: u128 = 1 << 21;
const PATH_REST: u128 = 1 << 22;
const MAX_PREFIX: usize = (1 << 20) - 1;

/// Which table a route goes into for one of its hosts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TableKey {
    Exact(Box<str>),
    Wildcard(Box<str>),
    Any,
}

impl Router {
    /// Builds the table from `(route id, priority, match)` triples in definition order.
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (u32, Option<u32>, &'a RouteMatch)>,
    ) -> Result<Self, Error> {
        let mut router = Router::default();
        let mut order = Vec::new();
        let mut tables: HashMap<TableKey, Table> = HashMap::new();
        for (i, (id, priority, m)) in routes.into_iter().enumerate() {
            let placed = place(id, priority, m)?;
            let idx = id as usize;
            if router.placed.len() <= idx {
                router.placed.resize_with(idx + 1, || None);
                order.resize(idx + 1, 0);
            }
            order[idx] = i as u32;
            for (home, _) in &placed.homes {
                tables.entry(home.clone()).or_default().members.push(id);
            }
            router.placed[idx] = Some(Arc::new(placed));
        }
        for (key, mut table) in tables {
            let members = std::mem::take(&mut table.members);
            let table = router.fill(&key, members, &|id| order[id as usize]);
            router.set(key, table);
        }
        Ok(router)
    }

    /// The router with routes changed: each `(id, Some((priority, match)))` is added or
    /// replaced, each `(id, None)` removed. Only the tables those routes were or are in
    /// are built again, their routes ranked by `order` (their definition order now); the
    /// other tables are shared with `self`.
    pub fn update(
        &self,
        changes: &[RouteChange<'_>],
        order: &dyn Fn(u32) -> u32,
    ) -> Result<Self, Error> {
        let mut next = self.clone();
        let mut touched: HashSet<TableKey> = HashSet::new();
        let mut changed: HashSet<u32> = HashSet::new();
        for (id, new) in changes {
            let idx = *id as usize;
            if next.placed.len() <= idx {
                next.placed.resize_with(idx + 1, || None);
            }
            if let Some(old) = next.placed[idx].take() {
                touched.extend(old.homes.iter().map(|(k, _)| k.clone()));
            }
            if let Some((priority, m)) = new {
                let placed = place(*id, *priority, m)?;
                touched.extend(placed.homes.iter().map(|(k, _)| k.clone()));
                next.placed[idx] = Some(Arc::new(placed));
            }
            changed.insert(*id);
        }
        for key in touched {
            let mut members: Vec<u32> = next
                .table(&key)
                .map(|t| {
                    t.members
                        .iter()
                        .copied()
                        .filter(|m| !changed.contains(m))
                        .collect()
                })
                .unwrap_or_default();
            members.extend(changed.iter().copied().filter(|id| {
                next.placed[*id as usize]
                    .as_ref()
                    .is_some_and(|p| p.homes.iter().any(|(k, _)| *k == key))
            }));
            let table = next.fill(&key, members, order);
            next.set(key, table);
        }
        Ok(next)
    }

    /// A table of `members`, ranked by `order`.
    fn fill(&self, key: &TableKey, members: Vec<u32>, order: &dyn Fn(u32) -> u32) -> Table {
        let mut t = Table::default();
        for &id in &members {
            let Some(p) = self.placed.get(id as usize).and_then(Option::as_ref) else {
                continue;
            };
            let Some((_, host_rank)) = p.homes.iter().find(|(k, _)| k == key) else {
                continue;
            };
            t.insert(
                &p.slot,
                Entry {
                    key: with_host(p.tail | order(id) as u128, *host_rank),
                    route: id,
                    conds: p.conds.clone(),
                },
            );
        }
        t.members = members;
        t.sort();
        t
    }

    fn table(&self, key: &TableKey) -> Option<&Arc<Table>> {
        match key {
            TableKey::Exact(h) => self.exact_hosts.get(h),
            TableKey::Wildcard(s) => self.wildcard_hosts.get(s),
            TableKey::Any => Some(&self.any_host),
        }
    }

    /// Puts `table` in its place (an empty one leaves).
    fn set(&mut self, key: TableKey, table: Table) {
        let empty = table.members.is_empty();
        let table = Arc::new(table);
        match key {
            TableKey::Exact(h) if empty => drop(self.exact_hosts.remove(&h)),
            TableKey::Wildcard(s) if empty => drop(self.wildcard_hosts.remove(&s)),
            TableKey::Exact(h) => drop(self.exact_hosts.insert(h, table)),
            TableKey::Wildcard(s) => drop(self.wildcard_hosts.insert(s, table)),
            TableKey::Any => self.any_host = table,
        }
    }

    /// The id of the route that takes `req`, if any.
    #[inline]
    pub fn lookup(&self, req: &Request<'_>) -> Option<u32> {
        let mut best = Best {
            key: u128::MAX,
            route: u32::MAX,
        };
        if !self.exact_hosts.is_empty()
            && let Some(t) = self.exact_hosts.get(req.host)
        {
            self.lookup_table(t, req, &mut best);
        }
        if !self.wildcard_hosts.is_empty() {
            // Longest suffix first: ".b.example.com" before ".example.com".
            for (i, b) in req.host.bytes().enumerate() {
                if b == b'.'
                    && let Some(t) = self.wildcard_hosts.get(&req.host[i..])
                {
                    self.lookup_table(t, req, &mut best);
                }
            }
        }
        self.lookup_table(&self.any_host, req, &mut best);
        (best.route != u32::MAX).then_some(best.route)
    }

    #[inline]
    fn lookup_table(&self, t: &Table, req: &Request<'_>, best: &mut Best) {
        if !t.exact.is_empty()
            && let Some(entries) = t.exact.get(req.path)
        {
            self.scan(entries, req, best);
        }
        if !t.prefixes.is_empty() {
            let path = req.path.as_bytes();
            t.prefixes.walk(path, |node, len| {
                self.scan(&node.plain, req, best);
                if !node.segment.is_empty() && (len == path.len() || path[len] == b'/') {
                    self.scan(&node.segment, req, best);
                }
            });
        }
        for e in &t.regex {
            if e.key >= best.key {
                break;
            }
            let c = &e.conds;
            if c.path_regex.as_ref().is_some_and(|r| r.is_match(req.path)) && c.matches(req) {
                *best = Best {
                    key: e.key,
                    route: e.route,
                };
                break;
            }
        }
        self.scan(&t.rest, req, best);
    }

    #[inline]
    fn scan(&self, entries: &[Entry], req: &Request<'_>, best: &mut Best) {
        for e in entries {
            if e.key >= best.key {
                return;
            }
            if e.conds.matches(req) {
                *best = Best {
                    key: e.key,
                    route: e.route,
                };
                return;
            }
        }
    }
}

struct Best {
    key: u128,
    route: u32,
}

/// Compiles a route for the tables.
fn place(id: u32, priority: Option<u32>, m: &RouteMatch) -> Result<Placed, Error> {
    let (conds, slot, path_rank) =
        compile_conditions(m).map_err(|e| Error::Route(format!("route {id}: {e}")))?;
    Ok(Placed {
        tail: tail_key(priority, path_rank, &conds, 0),
        conds: Arc::new(conds),
        slot,
        homes: table_refs(&m.hosts),
    })
}

fn table_refs(hosts: &[String]) -> Vec<(TableKey, u128)> {
    if hosts.is_empty() {
        return vec![(TableKey::Any, HOST_ANY)];
    }
    let mut lower: Vec<String> = hosts
        .iter()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    lower.sort();
    lower.dedup();
    lower
        .into_iter()
        .map(|h| match h.strip_prefix('*') {
            Some(suffix) => {
                let rank = 1 + (1000 - suffix.len().min(999)) as u128;
                (TableKey::Wildcard(suffix.into()), rank)
            }
            None => (TableKey::Exact(h.into()), 0),
        })
        .collect()
}

impl Table {
    fn insert(&mut self, slot: &PathSlot, entry: Entry) {
        // (Entries are cloned from `Placed`; the slot says where they go.)
        match slot {
            PathSlot::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(entry),
            PathSlot::Prefix(p, segment) => self.prefixes.insert(p.as_bytes(), entry, *segment),
            PathSlot::Regex => self.regex.push(entry),
            PathSlot::Rest => self.rest.push(entry),
        }
    }

    fn sort(&mut self) {
        for v in self.exact.values_mut() {
            v.sort_unstable_by_key(|e| e.key);
        }
        self.prefixes.sort();
        self.regex.sort_unstable_by_key(|e| e.key);
        self.rest.sort_unstable_by_key(|e| e.key);
    }
}

impl Conditions {
    #[inline]
    fn matches(&self, req: &Request<'_>) -> bool {
        if self.grpc && !req.grpc {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req.query))
    }
}

impl HeaderCond {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        let hit = match &self.kind {
            HeaderKind::Present => values.peek().is_some(),
            HeaderKind::Absent => values.peek().is_none(),
            kind => values.any(|v| {
                let Ok(v) = v.to_str() else { return false };
                match kind {
                    HeaderKind::Exact(x) => v == &**x,
                    HeaderKind::Prefix(x) => v.starts_with(&**x),
                    HeaderKind::Suffix(x) => v.ends_with(&**x),
                    HeaderKind::Regex(r) => r.is_match(v),
                    HeaderKind::Present | HeaderKind::Absent => false,
                }
            }),
        };
        hit != self.invert
    }
}

impl QueryCond {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if crate::rewrite::percent_decode(name) != *self.name {
                return false;
            }
            match &self.kind {
                QueryKind::Present => true,
                QueryKind::Exact(x) => {
                    crate::rewrite::percent_decode(&value.replace('+', " ")) == **x
                }
                QueryKind::Regex(r) => {
                    r.is_match(&crate::rewrite::percent_decode(&value.replace('+', " ")))
                }
            }
        })
    }
}

fn compile_conditions(m: &RouteMatch) -> Result<(Conditions, PathSlot, u128), String> {
    let mut c = Conditions::default();
    let (slot, rank) = match (&m.path, &m.grpc) {
        (Some(PathMatch::Exact(p)), _) => (PathSlot::Exact(p.clone()), 0),
        (Some(PathMatch::Prefix(p)), _) => {
            (PathSlot::Prefix(p.clone(), false), prefix_rank(p.len()))
        }
        (Some(PathMatch::PathPrefix(p)), _) => {
            let trimmed = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p.as_str()
            };
            let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
            (
                PathSlot::Prefix(trimmed.to_owned(), trimmed != "/"),
                prefix_rank(trimmed.len()),
            )
        }
        (Some(PathMatch::Regex(r)), _) => {
            c.path_regex = Some(anchored_regex(r)?);
            (PathSlot::Regex, PATH_REGEX)
        }
        (
            None,
            Some(GrpcMatch {
                service: Some(s),
                method: Some(meth),
            }),
        ) => (PathSlot::Exact(format!("/{s}/{meth}")), 0),
        (
            None,
            Some(GrpcMatch {
                service: Some(s),
                method: None,
            }),
        ) => {
            let p = format!("/{s}/");
            let rank = prefix_rank(p.len());
            (PathSlot::Prefix(p, false), rank)
        }
        // Any gRPC request: the prefix `/` with the content-type condition, so it ranks above
        // a bare catch-all `/`.
        (None, Some(_)) => (PathSlot::Prefix("/".into(), false), prefix_rank(1)),
        (None, None) => (PathSlot::Rest, PATH_REST),
    };
    c.grpc = m.grpc.is_some();
    for meth in &m.methods {
        c.methods.push(
            Method::from_bytes(meth.as_bytes()).map_err(|_| format!("`{meth}` is not a method"))?,
        );
    }
    for h in &m.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", h.name))?;
        let kind = match h.condition()? {
            HeaderCondition::Exact(v) => HeaderKind::Exact(v.into()),
            HeaderCondition::Prefix(v) => HeaderKind::Prefix(v.into()),
            HeaderCondition::Suffix(v) => HeaderKind::Suffix(v.into()),
            HeaderCondition::Regex(r) => HeaderKind::Regex(anchored_regex(r)?),
            HeaderCondition::Present => HeaderKind::Present,
            HeaderCondition::Absent => HeaderKind::Absent,
        };
        c.headers.push(HeaderCond {
            name,
            kind,
            invert: h.invert,
        });
    }
    for q in &m.query {
        let kind = match q.condition()? {
            QueryCondition::Exact(v) => QueryKind::Exact(v.into()),
            QueryCondition::Regex(r) => QueryKind::Regex(anchored_regex(r)?),
            QueryCondition::Present => QueryKind::Present,
        };
        c.query.push(QueryCond {
            name: q.name.as_str().into(),
            kind,
        });
    }
    Ok((c, slot, rank))
}

fn prefix_rank(len: usize) -> u128 {
    1 + (MAX_PREFIX - len.min(MAX_PREFIX)) as u128
}

/// The precedence key without its host part, which depends on the table. Layout from the
/// most significant bit: priority (33 bits), host (16), path (23), method (1), header
/// count (8, inverted), query count (8, inverted), definition order (32).
fn tail_key(priority: Option<u32>, path_rank: u128, c: &Conditions, order: u32) -> u128 {
    let prio = match priority {
        Some(p) => p as u128,
        None => 1 << 32,
    };
    let methods = if c.methods.is_empty() { 1 } else { 0 };
    // The gRPC content-type condition counts as a header condition.
    let headers = 255 - (c.headers.len() + usize::from(c.grpc)).min(255) as u128;
    let query = 255 - c.query.len().min(255) as u128;
    (prio << 88)
        | (path_rank << 49)
        | (methods << 48)
        | (headers << 40)
        | (query << 32)
        | order as u128
}

fn with_host(tail: u128, host_rank: u128) -> u128 {
    tail | (host_rank << 72)
}

#[cfg(test)]
mod tests;
