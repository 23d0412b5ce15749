//! The tree's snapshot format, carried across hot reloads.
//!
//! Little-endian, nodes in pre-order from the root:
//! `b"CATR" 1u8 clock:u64 { edge_len:u32 edge:[u8] n_tenants:u32
//! { tenant:u32 time:u64 }* n_children:u32 }*`. Tenant sizes are recomputed
//! on restore, so a snapshot cannot make them inconsistent.

use super::{Node, ROOT, Tree};

const MAGIC: &[u8; 4] = b"CATR";
const VERSION: u8 = 1;

impl Tree {
    /// Serialize the tree (see the module docs for the format).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.node_count() * 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.clock.to_le_bytes());
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            let node = self.node(id);
            out.extend_from_slice(&(node.edge.len() as u32).to_le_bytes());
            out.extend_from_slice(node.edge.as_bytes());
            out.extend_from_slice(&(node.tenants.len() as u32).to_le_bytes());
            for &(tenant, time) in &node.tenants {
                out.extend_from_slice(&tenant.to_le_bytes());
                out.extend_from_slice(&time.to_le_bytes());
            }
            out.extend_from_slice(&(node.children.len() as u32).to_le_bytes());
            // Reversed so that pre-order visits children in list order.
            stack.extend(node.children.iter().rev().map(|&(_, c)| c));
        }
        out
    }

    /// Rebuild a tree from [`Tree::encode`]'s output. Garbage or truncated
    /// input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Tree, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a cache_aware snapshot (bad magic)".into());
        }
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(format!("snapshot format {version}, expected {VERSION}"));
        }
        let mut tree = Tree {
            clock: r.u64()?,
            ..Tree::default()
        };
        if !r.string()?.is_empty() {
            return Err("snapshot root has a non-empty edge".into());
        }
        let children = read_tenants(&mut r, &mut tree, ROOT)?;
        let mut pending: Vec<(usize, u32)> = vec![(ROOT, children)];
        while let Some((parent, left)) = pending.pop() {
            if left == 0 {
                continue;
            }
            pending.push((parent, left - 1));
            let edge = r.string()?;
            let first = edge
                .chars()
                .next()
                .ok_or("snapshot has an empty edge below the root")?;
            if tree.node(parent).child(first).is_some() {
                return Err("snapshot has two children with the same first char".into());
            }
            let id = tree.alloc(Node::new(edge, parent));
            tree.node_mut(parent).children.push((first, id));
            let children = read_tenants(&mut r, &mut tree, id)?;
            pending.push((id, children));
        }
        if r.remaining() != 0 {
            return Err("snapshot has trailing bytes".into());
        }
        Ok(tree)
    }
}

/// Read node `id`'s tenants into the tree and return its child count.
fn read_tenants(r: &mut Reader<'_>, tree: &mut Tree, id: usize) -> Result<u32, String> {
    let n = r.u32()? as usize;
    // Each tenant takes 12 bytes: refuse counts the input cannot hold.
    if n > r.remaining() / 12 {
        return Err("snapshot truncated in a tenant list".into());
    }
    let chars = tree.node(id).edge_chars;
    for _ in 0..n {
        let (tenant, time) = (r.u32()?, r.u64()?);
        if tree.node(id).holds(tenant) {
            return Err("snapshot lists a tenant twice on one node".into());
        }
        tree.node_mut(id).tenants.push((tenant, time));
        *tree.sizes.entry(tenant).or_insert(0) += chars;
    }
    r.u32()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err("snapshot truncated".into());
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<&'a str, String> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| "snapshot edge is not UTF-8".to_string())
    }
}
