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
//! method AX (Moffat's X with one added, so that `E` is never zero) takes
//! the number seen exactly once, plus one. With update exclusion, a
//! symbol's count is raised only in contexts down to the first one (from
//! the highest order) where it had already been seen.
//!
//! Two other choices are made at prediction time ([`Smoothing`]): blending
//! as above, or backing off (a symbol seen in the highest context gets
//! `count / (T + E)` there alone; one not seen gets the escape share times
//! its lower-order probability; the caller renormalises), and where to
//! start: the longest context seen (the order bound), or, as PPM* does, the
//! shortest *deterministic* one (a single symbol seen in it) when there is
//! one.
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

/// The escape method of a PPM model: how much weight a context gives to
/// the lower orders (to symbols it has not seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Escape {
    /// Method C: the number of distinct symbols seen in the context.
    C,
    /// Method AX: the number of symbols seen exactly once, plus one.
    Ax,
}

/// How a PPM model's orders are put together at prediction time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Smoothing {
    /// Interpolated: every order from the starting one down to order 0
    /// contributes (IDyOM's default).
    Blended,
    /// Back-off: the starting context alone for the symbols it has seen,
    /// lower orders only for the rest (without exclusion; renormalised by
    /// the caller).
    Backoff,
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
    #[cfg(test)]
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
            Escape::Ax => f64::from(self.singles) + 1.0,
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

    pub(crate) fn max_order(&self) -> usize {
        self.max_order
    }

    pub(crate) fn escape(&self) -> Escape {
        self.escape
    }

    pub(crate) fn update_exclusion(&self) -> bool {
        self.update_exclusion
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
    /// lowest order first, into `out` (cleared first). With
    /// `deterministic_start`, the list stops at the shortest context in
    /// which a single symbol has been seen, if there is one (PPM*).
    pub(crate) fn contexts<'a>(
        &'a self,
        history: &[u16],
        deterministic_start: bool,
        out: &mut Vec<&'a Node>,
    ) {
        out.clear();
        let top = self.max_order.min(history.len());
        for k in 0..=top {
            match self.nodes.get(&key(history, k)) {
                Some(n) => {
                    out.push(n);
                    // Order 0 is never taken as the start: it is the
                    // unconditioned distribution, not a context.
                    if deterministic_start && k > 0 && n.syms.len() == 1 {
                        break;
                    }
                }
                // A longer context containing an unseen one is unseen too.
                None => break,
            }
        }
    }

    /// `P(s)` given the contexts from [`Ppm::contexts`], one symbol at a
    /// time: the definition [`Ppm::dist`] is checked against.
    #[cfg(test)]
    pub(crate) fn prob(&self, contexts: &[&Node], smoothing: Smoothing, s: u16) -> f64 {
        let mut p = 1.0 / f64::from(self.alphabet);
        match smoothing {
            Smoothing::Blended => {
                for n in contexts {
                    let e = n.escape(self.escape);
                    p = (f64::from(n.count(s)) + e * p) / (f64::from(n.total) + e);
                }
            }
            Smoothing::Backoff => {
                for n in contexts {
                    let e = n.escape(self.escape);
                    let c = n.count(s);
                    p = if c > 0 {
                        f64::from(c) / (f64::from(n.total) + e)
                    } else {
                        e * p / (f64::from(n.total) + e)
                    };
                }
            }
        }
        p
    }

    /// The probability of every symbol in `window` given the contexts from
    /// [`Ppm::contexts`], into `out` (`out[i]` for symbol `window.start +
    /// i`). Blending unrolls into a sum over the symbols each context has
    /// seen plus one uniform share, so its cost is the contexts' sizes and
    /// the window, not the alphabet times the orders; the values equal the
    /// per-symbol definition (`prob`, kept for the tests).
    pub(crate) fn dist(
        &self,
        contexts: &[&Node],
        smoothing: Smoothing,
        window: std::ops::Range<u16>,
        out: &mut Vec<f64>,
    ) {
        let a = f64::from(self.alphabet);
        let start = window.start;
        let len = usize::from(window.end.min(self.alphabet).saturating_sub(start));
        out.clear();
        // The slot of symbol `s`, if it is in the window.
        let slot = |s: u16| s.checked_sub(start).map(usize::from).filter(|&i| i < len);
        match smoothing {
            Smoothing::Blended => {
                // P(s) = sum_k (prod_{j>k} l_j) c_k(s)/(T_k+E_k) + prod_j l_j / |A|,
                // with l_j = E_j/(T_j+E_j) the escape share of context j.
                let mut scale = 1.0;
                out.resize(len, 0.0);
                for n in contexts.iter().rev() {
                    let e = n.escape(self.escape);
                    let d = f64::from(n.total) + e;
                    for &(s, c) in &n.syms {
                        if let Some(i) = slot(s) {
                            out[i] += scale * f64::from(c) / d;
                        }
                    }
                    scale *= e / d;
                }
                let base = scale / a;
                out.iter_mut().for_each(|x| *x += base);
            }
            Smoothing::Backoff => {
                // From order 0 up: every symbol is scaled by the escape
                // share, and the ones the context has seen are replaced by
                // their own estimate. The scaling is kept aside (`scale`)
                // so a context costs its own size, not the window's.
                let mut scale = 1.0;
                out.resize(len, 1.0 / a);
                for n in contexts {
                    let e = n.escape(self.escape);
                    let d = f64::from(n.total) + e;
                    scale *= e / d;
                    if scale < 1e-200 {
                        // Fold the scale in before it underflows.
                        out.iter_mut().for_each(|x| *x *= scale);
                        scale = 1.0;
                    }
                    for &(s, c) in &n.syms {
                        if let Some(i) = slot(s) {
                            out[i] = f64::from(c) / d / scale;
                        }
                    }
                }
                out.iter_mut().for_each(|x| *x *= scale);
            }
        }
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(self.max_order as u8)
            .u16(self.alphabet)
            .u8(match self.escape {
                Escape::C => 0,
                Escape::Ax => 1,
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
            1 => Escape::Ax,
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
        m.contexts(&[0, 1, 0, 1, 0], false, &mut ctx);
        // Order 0: a=3, b=2, T=5, E=2: P0(b) = (2 + 2·0.5)/7 = 3/7.
        // Order 1 after a: b=2, T=2, E=1: P1(b) = (2 + 3/7)/3 = 17/21.
        let p = m.prob(&ctx, Smoothing::Blended, 1);
        assert!((p - 17.0 / 21.0).abs() < 1e-12, "{p}");
        let q = m.prob(&ctx, Smoothing::Blended, 0);
        assert!((p + q - 1.0).abs() < 1e-12);
        // Back-off: b was seen after a, so order 1 alone: 2/3; a was not:
        // escape 1/3 times order 0's 3/7: 1/7.
        let p = m.prob(&ctx, Smoothing::Backoff, 1);
        assert!((p - 2.0 / 3.0).abs() < 1e-12, "{p}");
        let q = m.prob(&ctx, Smoothing::Backoff, 0);
        assert!((q - 1.0 / 7.0).abs() < 1e-12, "{q}");
    }

    #[test]
    fn the_full_distribution_equals_the_per_symbol_probabilities() {
        let mut m = Ppm::new(3, 7, Escape::Ax, true);
        m.add_sequence(&[1, 2, 3, 1, 2, 4, 1, 2, 3, 5, 6, 1, 2]);
        let mut ctx = Vec::new();
        let mut d = Vec::new();
        for smoothing in [Smoothing::Blended, Smoothing::Backoff] {
            for h in [&[][..], &[1], &[1, 2], &[6, 1, 2], &[0, 0, 0]] {
                m.contexts(h, false, &mut ctx);
                m.dist(&ctx, smoothing, 0..7, &mut d);
                assert_eq!(d.len(), 7);
                let mut w = Vec::new();
                m.dist(&ctx, smoothing, 2..5, &mut w);
                assert_eq!(w, d[2..5]);
                for s in 0..7u16 {
                    let p = m.prob(&ctx, smoothing, s);
                    assert!(
                        (d[usize::from(s)] - p).abs() < 1e-12,
                        "{smoothing:?} {h:?} {s}"
                    );
                }
                if smoothing == Smoothing::Blended {
                    assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn the_deterministic_start_stops_at_the_shortest_single_symbol_context() {
        // a b c a b c a b: after ..a b, order 1 ([b]) has seen only c, so
        // PPM* starts there; without it, order 2 ([a b]) is used as well.
        let mut m = Ppm::new(2, 3, Escape::C, false);
        m.add_sequence(&[0, 1, 2, 0, 1, 2, 0, 1]);
        let mut ctx = Vec::new();
        m.contexts(&[0, 1, 2, 0, 1, 2, 0, 1], true, &mut ctx);
        assert_eq!(ctx.len(), 2);
        m.contexts(&[0, 1, 2, 0, 1, 2, 0, 1], false, &mut ctx);
        assert_eq!(ctx.len(), 3);
    }

    #[test]
    fn update_exclusion_stops_at_the_first_context_that_knew_the_symbol() {
        let mut m = Ppm::new(2, 4, Escape::Ax, true);
        m.add_sequence(&[1, 2, 1, 2]);
        // The last 2 followed [2,1]: order 2 ([2,1]) is new -> counted; order
        // 1 ([1]) had seen 2 -> counted and stop; order 0 not counted again.
        let root = &m.nodes[&key(&[], 0)];
        assert_eq!(root.count(2), 1);
        assert_eq!(root.count(1), 2);
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut m = Ppm::new(3, 300, Escape::Ax, true);
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
