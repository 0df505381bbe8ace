//! A radix trie over path bytes: walking a path visits every stored prefix of it in
//! O(path length), whatever the number of routes.

use super::Entry;

/// Prefix trie; node 0 is the root (the empty prefix).
#[derive(Debug)]
pub(super) struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
pub(super) struct Node {
    label: Box<[u8]>,
    /// Children by the first byte of their label, sorted.
    children: Vec<(u8, u32)>,
    /// Plain string prefixes ending here.
    pub(super) plain: Vec<Entry>,
    /// Segment-aware prefixes ending here (match only at a `/` boundary).
    pub(super) segment: Vec<Entry>,
}

impl Default for Trie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl Trie {
    /// True when nothing was inserted.
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].plain.is_empty() && self.nodes[0].segment.is_empty()
    }

    /// Stores `entry` under `prefix`.
    pub(super) fn insert(&mut self, prefix: &[u8], entry: Entry, segment: bool) {
        let mut node = 0usize;
        let mut rest = prefix;
        loop {
            if rest.is_empty() {
                let n = &mut self.nodes[node];
                if segment {
                    n.segment.push(entry)
                } else {
                    n.plain.push(entry)
                }
                return;
            }
            let first = rest[0];
            match self.nodes[node]
                .children
                .binary_search_by_key(&first, |c| c.0)
            {
                Err(pos) => {
                    let id = self.push(Node {
                        label: rest.into(),
                        ..Node::default()
                    });
                    self.nodes[node].children.insert(pos, (first, id));
                    node = id as usize;
                    rest = &[];
                }
                Ok(pos) => {
                    let child = self.nodes[node].children[pos].1 as usize;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common == label.len() {
                        node = child;
                        rest = &rest[common..];
                        continue;
                    }
                    // Split the child's edge at `common`: node -> mid -> child.
                    let tail: Box<[u8]> = label[common..].into();
                    let head: Box<[u8]> = label[..common].into();
                    let tail_first = tail[0];
                    self.nodes[child].label = tail;
                    let mid = self.push(Node {
                        label: head,
                        children: vec![(tail_first, child as u32)],
                        ..Node::default()
                    });
                    self.nodes[node].children[pos].1 = mid;
                    node = mid as usize;
                    rest = &rest[common..];
                }
            }
        }
    }

    fn push(&mut self, n: Node) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }

    /// Sorts every node's entries so a scan can stop at the first that matches.
    pub(super) fn sort(&mut self) {
        for n in &mut self.nodes {
            n.plain.sort_unstable_by_key(|e| e.key);
            n.segment.sort_unstable_by_key(|e| e.key);
        }
    }

    /// Calls `visit(node, prefix_len)` for every stored prefix of `path`, shortest first.
    #[inline]
    pub(super) fn walk<'a>(&'a self, path: &[u8], mut visit: impl FnMut(&'a Node, usize)) {
        let mut node = &self.nodes[0];
        let mut consumed = 0usize;
        loop {
            if !node.plain.is_empty() || !node.segment.is_empty() {
                visit(node, consumed);
            }
            let Some(&next) = path.get(consumed) else {
                return;
            };
            let Ok(pos) = node.children.binary_search_by_key(&next, |c| c.0) else {
                return;
            };
            let child = &self.nodes[node.children[pos].1 as usize];
            if !path[consumed..].starts_with(&child.label) {
                return;
            }
            consumed += child.label.len();
            node = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(route: u32) -> Entry {
        Entry {
            key: route as u128,
            route,
            conds: Default::default(),
        }
    }

    #[test]
    fn walk_finds_every_stored_prefix() {
        let mut t = Trie::default();
        for (i, p) in ["/", "/api", "/apis", "/api/v1", "/b", "/api/v1/users"]
            .iter()
            .enumerate()
        {
            t.insert(p.as_bytes(), e(i as u32), false);
        }
        let mut seen = Vec::new();
        t.walk(b"/api/v1/users/7", |n, len| {
            seen.push((n.plain[0].route, len))
        });
        assert_eq!(seen, vec![(0, 1), (1, 4), (3, 7), (5, 13)]);
        seen.clear();
        t.walk(b"/apix", |n, len| seen.push((n.plain[0].route, len)));
        assert_eq!(seen, vec![(0, 1), (1, 4)]);
        seen.clear();
        t.walk(b"", |n, len| seen.push((n.plain[0].route, len)));
        assert!(seen.is_empty());
    }

    #[test]
    fn shared_prefixes_split_edges() {
        let mut t = Trie::default();
        t.insert(b"/abcdef", e(0), false);
        t.insert(b"/abcxyz", e(1), true);
        t.insert(b"/abc", e(2), false);
        let mut seen = Vec::new();
        t.walk(b"/abcxyz/1", |n, len| {
            seen.extend(n.plain.iter().map(|x| (x.route, len)));
            seen.extend(n.segment.iter().map(|x| (x.route, len)));
        });
        assert_eq!(seen, vec![(2, 4), (1, 7)]);
    }
}
