//! An approximate, character-level radix tree shared by all workers: the
//! index cache-aware routing keeps of what it sent where, as the SGLang
//! router keeps it. The router holds one per policy (its `prefix-index`
//! import); the Rust SDK uses one in native unit tests in its stead.
//!
//! Each node holds a piece of text (its edge from the parent) and the workers
//! ("tenants") that were sent a request whose text passes through it, with a
//! logical time of their last use. It approximates what each worker has in its
//! KV cache: the router never sees the workers' real caches.
//!
//! Invariant: a tenant of a node is a tenant of every ancestor of that node
//! (insertion touches the whole path; eviction removes a tenant from a node
//! only when no child still holds it). Matching relies on it.

#![deny(missing_docs)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A worker id, as the router assigns them.
pub type Tenant = u32;

const ROOT: usize = 0;

#[derive(Debug, Clone)]
struct Node {
    /// Text from the parent to this node; empty only at the root.
    edge: Box<str>,
    /// `edge.chars().count()`, kept to size tenants without rescanning.
    edge_chars: u64,
    parent: usize,
    /// Children keyed by the first character of their edge.
    children: Vec<(char, usize)>,
    /// Tenants holding this node, with the logical time of their last use.
    tenants: Vec<(Tenant, u64)>,
}

impl Node {
    fn new(edge: &str, parent: usize) -> Self {
        Node {
            edge: edge.into(),
            edge_chars: edge.chars().count() as u64,
            parent,
            children: Vec::new(),
            tenants: Vec::new(),
        }
    }

    fn child(&self, first: char) -> Option<usize> {
        self.children
            .iter()
            .find(|(c, _)| *c == first)
            .map(|&(_, n)| n)
    }

    fn holds(&self, tenant: Tenant) -> bool {
        self.tenants.iter().any(|&(t, _)| t == tenant)
    }
}

/// The longest prefix of a text that some tenant in a set is believed to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMatch {
    /// Characters of the text matched.
    pub matched_chars: u64,
    /// The most recently used tenant holding that prefix, if any matched.
    pub tenant: Option<Tenant>,
}

/// The shared radix tree. See the module docs.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Arena of nodes; `None` marks a free slot listed in `free`.
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    /// Characters held per tenant: the sum of the edges of its nodes.
    sizes: HashMap<Tenant, u64, BuildHasherDefault<IdHasher>>,
    /// Logical clock, advanced on every insertion.
    clock: u64,
    /// The sum of `sizes`.
    total: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Some(Node::new("", ROOT))],
            free: Vec::new(),
            sizes: HashMap::default(),
            clock: 0,
            total: 0,
        }
    }
}

/// Hashes worker ids by multiplication: they are small router-assigned
/// integers, not attacker-chosen keys, so SipHash's cost buys nothing.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Length in bytes of the common prefix of `a` and `b`, on a char boundary.
/// Compares eight bytes at a time: this loop is most of a select's work.
fn common_prefix(a: &str, b: &str) -> usize {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let len = x.len().min(y.len());
    let mut n = 0;
    while n + 8 <= len {
        let wx = u64::from_le_bytes(x[n..n + 8].try_into().expect("8 bytes"));
        let wy = u64::from_le_bytes(y[n..n + 8].try_into().expect("8 bytes"));
        let diff = wx ^ wy;
        if diff != 0 {
            n += (diff.trailing_zeros() / 8) as usize;
            return back_to_boundary(a, n);
        }
        n += 8;
    }
    while n < len && x[n] == y[n] {
        n += 1;
    }
    back_to_boundary(a, n)
}

fn back_to_boundary(s: &str, mut n: usize) -> usize {
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

impl Tree {
    fn node(&self, id: usize) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: usize) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    fn alloc(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Characters the tree attributes to `tenant`.
    pub fn size(&self, tenant: Tenant) -> u64 {
        self.sizes.get(&tenant).copied().unwrap_or(0)
    }

    /// Characters held over all tenants (text shared by two counts twice).
    pub fn chars(&self) -> u64 {
        self.total
    }

    /// Live nodes, root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Mark `node` as used by `tenant` now.
    fn touch(&mut self, id: usize, tenant: Tenant, now: u64) {
        let node = self.node_mut(id);
        match node.tenants.iter_mut().find(|(t, _)| *t == tenant) {
            Some(entry) => entry.1 = now,
            None => {
                node.tenants.push((tenant, now));
                let chars = node.edge_chars;
                *self.sizes.entry(tenant).or_insert(0) += chars;
                self.total += chars;
            }
        }
    }

    /// Record that `tenant` was sent `text`: every node on its path is now
    /// held by `tenant`, splitting an edge where the text leaves it.
    pub fn insert(&mut self, text: &str, tenant: Tenant) {
        self.clock += 1;
        let now = self.clock;
        let mut at = ROOT;
        let mut rest = text;
        self.touch(at, tenant, now);
        while let Some(first) = rest.chars().next() {
            let Some(child) = self.node(at).child(first) else {
                let leaf = self.alloc(Node::new(rest, at));
                self.node_mut(at).children.push((first, leaf));
                self.touch(leaf, tenant, now);
                return;
            };
            let shared = common_prefix(&self.node(child).edge, rest);
            let next = if shared == self.node(child).edge.len() {
                child
            } else {
                self.split(at, child, shared)
            };
            self.touch(next, tenant, now);
            at = next;
            rest = &rest[shared..];
        }
    }

    /// Split `child`'s edge after `bytes`, returning the new middle node.
    /// The middle node inherits the child's tenants, so sizes do not change.
    fn split(&mut self, parent: usize, child: usize, bytes: usize) -> usize {
        let old = self.node(child);
        let (head, tail) = old.edge.split_at(bytes);
        let mut mid = Node::new(head, parent);
        mid.tenants = old.tenants.clone();
        let tail_first = tail.chars().next().expect("split inside the edge");
        let head_first = head.chars().next().expect("split after one char");
        let tail = Node::new(tail, 0);
        let mid_id = self.alloc(mid);
        let node = self.node_mut(child);
        node.edge = tail.edge;
        node.edge_chars = tail.edge_chars;
        node.parent = mid_id;
        self.node_mut(mid_id).children.push((tail_first, child));
        let entry = self
            .node_mut(parent)
            .children
            .iter_mut()
            .find(|(c, _)| *c == head_first)
            .expect("child is listed under its first char");
        entry.1 = mid_id;
        mid_id
    }

    /// The longest prefix of `text` held by one of `allowed` (sorted), and
    /// which of them holds it (the most recently used; ties: smaller id).
    pub fn prefix_match(&self, text: &str, allowed: &[Tenant]) -> PrefixMatch {
        let mut best = PrefixMatch {
            matched_chars: 0,
            tenant: None,
        };
        let mut at = ROOT;
        let mut rest = text;
        let mut matched = 0u64;
        while let Some(first) = rest.chars().next() {
            let Some(child) = self.node(at).child(first) else {
                break;
            };
            let node = self.node(child);
            let Some(tenant) = Self::most_recent(node, allowed) else {
                break;
            };
            let shared = common_prefix(&node.edge, rest);
            matched += if shared == node.edge.len() {
                node.edge_chars
            } else {
                rest[..shared].chars().count() as u64
            };
            best = PrefixMatch {
                matched_chars: matched,
                tenant: Some(tenant),
            };
            if shared < node.edge.len() {
                break;
            }
            at = child;
            rest = &rest[shared..];
        }
        best
    }

    fn most_recent(node: &Node, allowed: &[Tenant]) -> Option<Tenant> {
        node.tenants
            .iter()
            .filter(|(t, _)| allowed.binary_search(t).is_ok())
            .max_by_key(|&&(t, time)| (time, Reverse(t)))
            .map(|&(t, _)| t)
    }

    /// For every tenant above `max_chars`, drop its least recently used
    /// leaves until it fits. Nodes no tenant holds any more are freed.
    pub fn evict(&mut self, max_chars: u64) {
        let over: Vec<Tenant> = self
            .sizes
            .iter()
            .filter(|&(_, &size)| size > max_chars)
            .map(|(&t, _)| t)
            .collect();
        for tenant in over {
            self.evict_tenant(tenant, max_chars);
        }
    }

    /// Whether `id` is a leaf as far as `tenant` is concerned.
    fn is_tenant_leaf(&self, id: usize, tenant: Tenant) -> bool {
        let node = self.node(id);
        node.holds(tenant)
            && node
                .children
                .iter()
                .all(|&(_, c)| !self.node(c).holds(tenant))
    }

    fn last_use(&self, id: usize, tenant: Tenant) -> u64 {
        self.node(id)
            .tenants
            .iter()
            .find(|(t, _)| *t == tenant)
            .map_or(0, |&(_, time)| time)
    }

    fn evict_tenant(&mut self, tenant: Tenant, max_chars: u64) {
        let mut leaves: BinaryHeap<Reverse<(u64, usize)>> = (0..self.nodes.len())
            .filter(|&id| id != ROOT && self.nodes[id].is_some() && self.is_tenant_leaf(id, tenant))
            .map(|id| Reverse((self.last_use(id, tenant), id)))
            .collect();
        while self.size(tenant) > max_chars {
            let Some(Reverse((_, id))) = leaves.pop() else {
                break;
            };
            let parent = self.node(id).parent;
            self.drop_tenant_at(id, tenant);
            if parent != ROOT && self.is_tenant_leaf(parent, tenant) {
                leaves.push(Reverse((self.last_use(parent, tenant), parent)));
            }
        }
    }

    /// Remove `tenant` from one node, freeing the node if nobody holds it.
    fn drop_tenant_at(&mut self, id: usize, tenant: Tenant) {
        let node = self.node_mut(id);
        node.tenants.retain(|&(t, _)| t != tenant);
        let chars = node.edge_chars;
        let orphan = node.tenants.is_empty() && node.children.is_empty();
        if let Some(size) = self.sizes.get_mut(&tenant) {
            self.total -= chars.min(*size);
            *size = size.saturating_sub(chars);
            if *size == 0 {
                self.sizes.remove(&tenant);
            }
        }
        if orphan {
            self.unlink(id);
        }
    }

    /// Detach `id` from its parent and free its whole subtree.
    fn unlink(&mut self, id: usize) {
        let parent = self.node(id).parent;
        self.node_mut(parent).children.retain(|&(_, c)| c != id);
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            let node = self.nodes[n].take().expect("live node");
            stack.extend(node.children.iter().map(|&(_, c)| c));
            self.free.push(n);
        }
    }

    /// Forget `tenant` everywhere (its worker left the fleet).
    pub fn remove_tenant(&mut self, tenant: Tenant) {
        let mut orphans = Vec::new();
        for (id, slot) in self.nodes.iter_mut().enumerate() {
            if let Some(node) = slot {
                node.tenants.retain(|&(t, _)| t != tenant);
                if id != ROOT && node.tenants.is_empty() {
                    orphans.push(id);
                }
            }
        }
        self.total -= self.sizes.remove(&tenant).unwrap_or(0);
        for id in orphans {
            // A parent's orphaned subtree may already have freed it.
            if self.nodes[id].is_some() {
                self.unlink(id);
            }
        }
    }

    /// Forget every tenant not in `keep` (their workers left the fleet).
    pub fn retain_tenants(&mut self, keep: &[Tenant]) {
        let gone: Vec<Tenant> = self.tenants().filter(|t| !keep.contains(t)).collect();
        for tenant in gone {
            self.remove_tenant(tenant);
        }
    }

    /// Every tenant the tree holds text for.
    pub fn tenants(&self) -> impl Iterator<Item = Tenant> + '_ {
        self.sizes.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_split_and_sizes_count() {
        let mut tree = Tree::default();
        tree.insert("hello world", 1);
        tree.insert("hello there", 2);
        assert_eq!(tree.size(1), 11);
        assert_eq!(tree.size(2), 11);
        assert_eq!(tree.chars(), 22);
        assert_eq!(tree.node_count(), 4, "root, 'hello ', 'world', 'there'");
        let m = tree.prefix_match("hello wonder", &[1, 2]);
        assert_eq!(
            m,
            PrefixMatch {
                matched_chars: 8,
                tenant: Some(1)
            }
        );
        assert_eq!(tree.prefix_match("hello wonder", &[2]).matched_chars, 6);
    }

    #[test]
    fn eviction_drops_the_least_recently_used_and_removal_forgets() {
        let mut tree = Tree::default();
        let (old, new) = (
            "the oldest prompt, sent first",
            "a newer prompt sent after it",
        );
        tree.insert(old, 1);
        tree.insert(new, 1);
        tree.insert(new, 2);
        tree.evict(30);
        assert!(tree.size(1) <= 30);
        assert_eq!(tree.prefix_match(old, &[1]).matched_chars, 0);
        assert!(tree.prefix_match(new, &[1]).matched_chars > 0);
        tree.retain_tenants(&[2, 3]);
        assert_eq!(tree.size(1), 0);
        assert_eq!(tree.chars(), tree.size(2));
        assert_eq!(tree.prefix_match(new, &[1, 2]).tenant, Some(2));
        assert_eq!(tree.tenants().collect::<Vec<_>>(), [2]);
    }
}
