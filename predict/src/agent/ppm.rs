//! Prediction by partial matching over small integer symbols: a
//! variable-order Markov model with interpolated ("blended") smoothing, as
//! IDyOM uses it.
//!
//! For a context of order `k` (the last `k` symbols) seen before, with total
//! count `T`, and escape weight `E`:
//!
//! ```text
//! P_k(s) = (count_k(s) + E · P_{k-1}(s)) / (T + E)
//! ```
//!
//! down to a uniform distribution over the alphabet below order 0. Escape
//! method C takes `E` = number of distinct symbols seen in the context;
//! method X takes the number seen exactly once, plus one. With update
//! exclusion, a symbol's count is raised only in contexts down to the first
//! one (from the highest order) where it had already been seen.
//!
//! Contexts are keyed exactly: order (4 bits) and up to 9 symbols of 12 bits
//! packed in a `u128`, so no two contexts ever share counts.

use super::ModelError;
use super::codec::{Dec, Enc};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Largest order.
pub(crate) const MAX_ORDER: usize = 9;
/// Symbols are below this.
pub(crate) const MAX_SYMBOL: u16 = 4096;

/// A fast, deterministic hasher for the packed context keys (the keys are
/// already well mixed by [`mix`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = mix(v);
    }
}

fn mix(v: u128) -> u64 {
    let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

type Map = HashMap<u128, Node, BuildHasherDefault<KeyHasher>>;

/// The escape method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Escape {
    /// Distinct symbols.
    C,
    /// Symbols seen once, plus one.
    X,
}

/// Counts of one context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Node {
    total: u32,
    /// Seen exactly once.
    singles: u32,
    /// Sorted by symbol.
    syms: Vec<(u16, u32)>,
}

impl Node {
    fn count(&self, s: u16) -> u32 {
        match self.syms.binary_search_by_key(&s, |x| x.0) {
            Ok(i) => self.syms[i].1,
            Err(_) => 0,
        }
    }

    /// Adds one to `s`; returns its old count.
    fn add(&mut self, s: u16) -> u32 {
        self.total = self.total.saturating_add(1);
        match self.syms.binary_search_by_key(&s, |x| x.0) {
            Ok(i) => {
                let old = self.syms[i].1;
                self.syms[i].1 = old.saturating_add(1);
                if old == 1 {
                    self.singles -= 1;
                }
                old
            }
            Err(i) => {
                self.syms.insert(i, (s, 1));
                self.singles += 1;
                0
            }
        }
    }

    fn escape(&self, method: Escape) -> f64 {
        match method {
            Escape::C => self.syms.len() as f64,
            Escape::X => f64::from(self.singles) + 1.0,
        }
    }
}

/// Packs the last `k` symbols of `history` with the order.
fn key(history: &[u16], k: usize) -> u128 {
    let mut v = k as u128;
    for &s in &history[history.len() - k..] {
        v = (v << 12) | u128::from(s & 0x0FFF);
    }
    v
}

/// A PPM model over symbols `0..alphabet`.
#[derive(Debug, Clone)]
pub(crate) struct Ppm {
    max_order: usize,
    alphabet: u16,
    escape: Escape,
    update_exclusion: bool,
    nodes: Map,
}

impl Ppm {
    pub(crate) fn new(
        max_order: usize,
        alphabet: u16,
        escape: Escape,
        update_exclusion: bool,
    ) -> Ppm {
        Ppm {
            max_order: max_order.min(MAX_ORDER),
            alphabet: alphabet.clamp(1, MAX_SYMBOL),
            escape,
            update_exclusion,
            nodes: Map::default(),
        }
    }

    pub(crate) fn alphabet(&self) -> u16 {
        self.alphabet
    }

    /// Learns that `s` followed `history`.
    pub(crate) fn add(&mut self, history: &[u16], s: u16) {
        let top = self.max_order.min(history.len());
        for k in (0..=top).rev() {
            let old = self.nodes.entry(key(history, k)).or_default().add(s);
            if self.update_exclusion && old > 0 {
                break;
            }
        }
    }

    /// Learns a whole sequence.
    #[cfg(test)]
    pub(crate) fn add_sequence(&mut self, seq: &[u16]) {
        for i in 0..seq.len() {
            self.add(&seq[..i], seq[i]);
        }
    }

    /// The nodes for each order 0..=max that exists after `history`,
    /// lowest order first, into `out` (cleared first).
    pub(crate) fn contexts<'a>(&'a self, history: &[u16], out: &mut Vec<&'a Node>) {
        out.clear();
        let top = self.max_order.min(history.len());
        for k in 0..=top {
            match self.nodes.get(&key(history, k)) {
                Some(n) => out.push(n),
                // A longer context containing an unseen one is unseen too.
                None => break,
            }
        }
    }

    /// `P(s)` given the contexts from [`Ppm::contexts`].
    pub(crate) fn prob(&self, contexts: &[&Node], s: u16) -> f64 {
        let mut p = 1.0 / f64::from(self.alphabet);
        for n in contexts {
            let e = n.escape(self.escape);
            p = (f64::from(n.count(s)) + e * p) / (f64::from(n.total) + e);
        }
        p
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(self.max_order as u8)
            .u16(self.alphabet)
            .u8(match self.escape {
                Escape::C => 0,
                Escape::X => 1,
            })
            .u8(u8::from(self.update_exclusion));
        let mut keys: Vec<&u128> = self.nodes.keys().collect();
        keys.sort();
        e.var(keys.len() as u64);
        for k in keys {
            let n = &self.nodes[k];
            e.u128(*k).var(n.syms.len() as u64);
            let mut prev = 0u16;
            for &(s, c) in &n.syms {
                e.var(u64::from(s - prev)).var(u64::from(c));
                prev = s;
            }
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Ppm, ModelError> {
        let max_order = usize::from(d.u8()?);
        if max_order > MAX_ORDER {
            return Err(d.invalid(format!("model order {max_order} is above {MAX_ORDER}")));
        }
        let alphabet = d.u16()?;
        if alphabet == 0 || alphabet > MAX_SYMBOL {
            return Err(d.invalid(format!(
                "alphabet size {alphabet} is outside 1..={MAX_SYMBOL}"
            )));
        }
        let escape = match d.u8()? {
            0 => Escape::C,
            1 => Escape::X,
            x => return Err(d.invalid(format!("unknown escape method {x}"))),
        };
        let update_exclusion = match d.u8()? {
            0 => false,
            1 => true,
            x => return Err(d.invalid(format!("update exclusion flag {x} is not 0 or 1"))),
        };
        let n = d.count(17, "context")?;
        let mut nodes = Map::default();
        nodes.reserve(n);
        let mut prev_key = None;
        for _ in 0..n {
            let k = d.u128()?;
            // The order sits just above exactly `order` symbols.
            if !(0..=max_order).any(|o| (k >> (12 * o)) == o as u128) {
                return Err(d.invalid(format!(
                    "context key {k:#x} does not encode an order up to {max_order}"
                )));
            }
            if prev_key.is_some_and(|p| p >= k) {
                return Err(d.invalid("context keys are not in increasing order"));
            }
            prev_key = Some(k);
            let m = d.count(2, "symbol")?;
            let mut node = Node::default();
            node.syms.reserve(m);
            let mut s = 0u64;
            for i in 0..m {
                let delta = d.var()?;
                if i > 0 && delta == 0 {
                    return Err(d.invalid("symbols in a context are not in increasing order"));
                }
                s += delta;
                if s >= u64::from(alphabet) {
                    return Err(
                        d.invalid(format!("symbol {s} is outside the alphabet of {alphabet}"))
                    );
                }
                let c = d.var_max(u64::from(u32::MAX), "count")?;
                if c == 0 {
                    return Err(d.invalid("a symbol has a zero count"));
                }
                node.total = node.total.saturating_add(c as u32);
                if c == 1 {
                    node.singles += 1;
                }
                node.syms.push((s as u16, c as u32));
            }
            nodes.insert(k, node);
        }
        Ok(Ppm {
            max_order,
            alphabet,
            escape,
            update_exclusion,
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blending_matches_a_hand_computation() {
        // Sequence a b a b a (a=0, b=1) over an alphabet of 2, order 1,
        // escape C, no exclusion.
        let mut m = Ppm::new(1, 2, Escape::C, false);
        m.add_sequence(&[0, 1, 0, 1, 0]);
        let mut ctx = Vec::new();
        m.contexts(&[0, 1, 0, 1, 0], &mut ctx);
        // Order 0: a=3, b=2, T=5, E=2: P0(b) = (2 + 2·0.5)/7 = 3/7.
        // Order 1 after a: b=2, T=2, E=1: P1(b) = (2 + 3/7)/3 = 17/21.
        let p = m.prob(&ctx, 1);
        assert!((p - 17.0 / 21.0).abs() < 1e-12, "{p}");
        let q = m.prob(&ctx, 0);
        assert!((p + q - 1.0).abs() < 1e-12);
    }

    #[test]
    fn update_exclusion_stops_at_the_first_context_that_knew_the_symbol() {
        let mut m = Ppm::new(2, 4, Escape::X, true);
        m.add_sequence(&[1, 2, 1, 2]);
        // The last 2 followed [2,1]: order 2 ([2,1]) is new -> counted; order
        // 1 ([1]) had seen 2 -> counted and stop; order 0 not counted again.
        let root = &m.nodes[&key(&[], 0)];
        assert_eq!(root.count(2), 1);
        assert_eq!(root.count(1), 2);
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut m = Ppm::new(3, 300, Escape::X, true);
        m.add_sequence(&[5, 9, 299, 5, 9, 1, 5, 9, 299]);
        let mut e = Enc::default();
        m.encode(&mut e);
        let back = Ppm::decode(&mut Dec::new(&e.buf)).unwrap();
        assert_eq!(back.nodes, m.nodes);
        let mut e2 = Enc::default();
        back.encode(&mut e2);
        assert_eq!(e.buf, e2.buf);
    }
}
