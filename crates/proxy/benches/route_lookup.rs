//! Route lookup at 10, 1,000 and 10,000 routes with hosts and prefixes, beside a naive
//! baseline that scans the routes in precedence order.
//!
//! Run: `cargo bench -p portico-proxy --bench route_lookup`

#![allow(missing_docs)] // criterion_group! makes public items

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portico_model::{PathMatch, RouteMatch};
use portico_proxy::router::{Request, Router};

/// `n` routes over `n / 10` hosts (at least one), each with its own prefix.
fn routes(n: usize) -> Vec<RouteMatch> {
    let hosts = (n / 10).max(1);
    (0..n)
        .map(|i| RouteMatch {
            hosts: vec![format!("svc{}.example.com", i % hosts)],
            path: Some(PathMatch::Prefix(format!("/api/v{}/resource{}", i % 7, i))),
            ..RouteMatch::default()
        })
        .collect()
}

/// The baseline: routes sorted longest prefix first, scanned until one matches.
struct Naive {
    routes: Vec<(String, String, u32)>,
}

impl Naive {
    fn new(matches: &[RouteMatch]) -> Self {
        let mut routes: Vec<(String, String, u32)> = matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let Some(PathMatch::Prefix(p)) = &m.path else {
                    unreachable!()
                };
                (m.hosts[0].clone(), p.clone(), i as u32)
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.1.len()));
        Self { routes }
    }

    fn lookup(&self, host: &str, path: &str) -> Option<u32> {
        self.routes
            .iter()
            .find(|(h, p, _)| h == host && path.starts_with(p.as_str()))
            .map(|r| r.2)
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    let headers = HeaderMap::new();
    for n in [10usize, 1_000, 10_000] {
        let matches = routes(n);
        let router = Router::build(matches.iter().enumerate().map(|(i, m)| (i as u32, None, m)))
            .expect("router");
        let naive = Naive::new(&matches);
        // Look up the last route (worst case for the scan) and a miss.
        let last = n - 1;
        let host = format!("svc{}.example.com", last % (n / 10).max(1));
        let path = format!("/api/v{}/resource{}/items/42", last % 7, last);
        let req = Request {
            host: &host,
            path: &path,
            method: &Method::GET,
            headers: &headers,
            query: None,
            grpc: false,
        };
        assert_eq!(router.lookup(&req), Some(last as u32));
        assert_eq!(naive.lookup(&host, &path), Some(last as u32));
        group.bench_with_input(BenchmarkId::new("trie", n), &req, |b, req| {
            b.iter(|| router.lookup(black_box(req)))
        });
        group.bench_with_input(
            BenchmarkId::new("naive_scan", n),
            &(&host, &path),
            |b, (h, p)| b.iter(|| naive.lookup(black_box(h), black_box(p))),
        );
        let miss = Request {
            host: "nowhere.example.com",
            path: "/nothing",
            ..req
        };
        group.bench_with_input(BenchmarkId::new("trie_miss", n), &miss, |b, req| {
            b.iter(|| router.lookup(black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
