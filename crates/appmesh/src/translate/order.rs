//! Priorities. A gateway whose routes all go straight to virtual nodes keeps App Mesh's
//! priorities as they are (both order lower first, and Portico then orders by
//! specificity, as App Mesh orders unprioritized routes by their match's length).
//!
//! A gateway route through a virtual router becomes several Portico routes, one per router
//! route, and App Mesh's two steps (first the gateway route, then within it the router
//! route) must keep their order in one table. So on such a gateway every route gets an
//! explicit priority `group × 1002 + place`:
//!
//! - `group` is the gateway route's priority (0 to 1000); gateway routes without one come
//!   after them, as `1001 + rank`, where rank orders them as Portico's router would order
//!   their own matches (host, then path, then method, headers and query), the order App Mesh
//!   picks among them;
//! - `place` is the router route's priority (0 to 1000), 1001 for router routes without one
//!   (Portico orders those by specificity), 1001 for the gateway route's fallback (the
//!   gateway route's match alone answering 404, as App Mesh drops a request its router
//!   does not route), and 0 for a gateway route straight to a node.

use portico_model::{GrpcMatch, PathMatch, RouteMatch};

/// Where a Portico route sits in its gateway route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The gateway route itself, to a virtual node.
    Direct,
    /// A router route, with its priority.
    Router(Option<u32>),
    /// The gateway route's fallback (404) after its router routes.
    Fallback,
}

/// What ordering needs to know of one Portico route.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    /// The gateway route's priority.
    pub priority: Option<u32>,
    /// Its place in the gateway route.
    pub place: Place,
    /// The gateway route's own match.
    pub gateway_match: RouteMatch,
}

/// Every route's priority, in the order given; whether they were renumbered.
pub(crate) fn priorities(orders: &[Order]) -> (Vec<Option<u32>>, bool) {
    let backed = orders.iter().any(|o| o.place != Place::Direct);
    if !backed {
        return (orders.iter().map(|o| o.priority).collect(), false);
    }
    let unprioritized_backed = orders
        .iter()
        .any(|o| o.priority.is_none() && o.place != Place::Direct);
    // Dense ranks of the unprioritized gateway routes by their own match.
    let mut distinct: Vec<Key> = orders
        .iter()
        .filter(|o| o.priority.is_none())
        .map(|o| key(&o.gateway_match))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rank = |o: &Order| -> u32 {
        let k = key(&o.gateway_match);
        distinct.iter().position(|d| *d == k).unwrap_or(0) as u32
    };
    let out = orders
        .iter()
        .map(|o| {
            let group = match o.priority {
                Some(p) => Some(p),
                None if unprioritized_backed => Some(1001 + rank(o)),
                None => None,
            }?;
            let place = match o.place {
                Place::Direct => 0,
                Place::Router(Some(p)) => p,
                Place::Router(None) | Place::Fallback => 1001,
            };
            Some(group * 1002 + place)
        })
        .collect();
    (out, true)
}

/// Portico's router precedence of a match, most specific first (crates/proxy/src/router):
/// host, path, a method condition, more headers, more query conditions.
type Key = (u32, u32, u8, u32, u32);

const MAX_PREFIX: u32 = (1 << 20) - 1;

fn key(m: &RouteMatch) -> Key {
    let host = match m.hosts.first() {
        None => 0xFFFF,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => 1 + (1000 - suffix.len().min(999) as u32),
            None => 0,
        },
    };
    let prefix = |len: usize| 1 + (MAX_PREFIX - (len as u32).min(MAX_PREFIX));
    let path = match (&m.path, &m.grpc) {
        (Some(PathMatch::Exact(_)), _) => 0,
        (Some(PathMatch::Prefix(p) | PathMatch::PathPrefix(p)), _) => prefix(p.len()),
        (Some(PathMatch::Regex(_)), _) => 1 << 21,
        (
            None,
            Some(GrpcMatch {
                service: Some(_),
                method: Some(_),
            }),
        ) => 0,
        (
            None,
            Some(GrpcMatch {
                service: Some(s),
                method: None,
            }),
        ) => prefix(s.len() + 2),
        (None, Some(_)) => prefix(1),
        (None, None) => 1 << 22,
    };
    let method = u8::from(m.methods.is_empty());
    let headers = 255 - (m.headers.len() + usize::from(m.grpc.is_some())).min(255) as u32;
    let query = 255 - m.query.len().min(255) as u32;
    (host, path, method, headers, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(priority: Option<u32>, place: Place, prefix: &str) -> Order {
        Order {
            priority,
            place,
            gateway_match: RouteMatch {
                path: Some(PathMatch::Prefix(prefix.into())),
                ..RouteMatch::default()
            },
        }
    }

    #[test]
    fn direct_routes_keep_their_priorities() {
        let (p, renumbered) = priorities(&[
            o(Some(5), Place::Direct, "/a"),
            o(None, Place::Direct, "/b"),
        ]);
        assert_eq!(p, [Some(5), None]);
        assert!(!renumbered);
    }

    #[test]
    fn router_routes_keep_both_orders() {
        let (p, renumbered) = priorities(&[
            o(Some(1), Place::Router(Some(2)), "/"),
            o(Some(1), Place::Router(None), "/"),
            o(Some(1), Place::Fallback, "/"),
            o(Some(0), Place::Direct, "/x"),
            o(None, Place::Router(Some(0)), "/"),
            o(None, Place::Fallback, "/"),
            o(None, Place::Direct, "/api"),
        ]);
        assert!(renumbered);
        assert_eq!(
            p,
            [
                Some(1002 + 2),
                Some(1002 + 1001),
                Some(1002 + 1001),
                Some(0),
                // `/api` is more specific than `/`: App Mesh tries it first.
                Some(1002 * 1002),
                Some(1002 * 1002 + 1001),
                Some(1001 * 1002),
            ]
        );
    }
}
