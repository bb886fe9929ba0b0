//! A mesh of session replicas over the emulated network: each node holds a
//! [`SessionDoc`] and one [`Reliable`] channel end per other node, and moves
//! sync messages between them exactly as the engine's worker will.
//!
//! Used by the convergence tests and the partition benchmark.

use jam_core::{Micros, PeerId};
use jam_session_crdt::{SessionDoc, SyncError};
use jam_transport::netem::SimNode;
use jam_transport::reliable::{Reliable, ReliableConfig, ReliableEvent};
use std::collections::BTreeMap;

/// The peer id of mesh node `addr`.
pub fn peer_of(addr: u8) -> PeerId {
    PeerId([addr.wrapping_add(1); 16])
}

/// One replica and its channels.
pub struct MeshNode {
    /// This node's address.
    pub addr: u8,
    /// The replica.
    pub doc: SessionDoc,
    /// One channel end per other node.
    pub ends: BTreeMap<u8, Reliable>,
    /// Sync messages rejected (must stay zero on an honest mesh).
    pub sync_errors: Vec<SyncError>,
    /// Sync messages handed to the channels, and their bytes.
    pub sync_messages: u64,
    /// Bytes of sync messages handed to the channels.
    pub sync_bytes: u64,
}

impl MeshNode {
    /// A node for `doc` talking to every address in `all` but its own.
    pub fn new(addr: u8, mut doc: SessionDoc, all: &[u8], epoch: u32) -> MeshNode {
        let mut ends = BTreeMap::new();
        for &a in all.iter().filter(|a| **a != addr) {
            doc.add_peer(peer_of(a));
            ends.insert(a, Reliable::new(ReliableConfig::default(), epoch));
        }
        MeshNode {
            addr,
            doc,
            ends,
            sync_errors: Vec::new(),
            sync_messages: 0,
            sync_bytes: 0,
        }
    }

    /// Hands every pending sync message to the channels. Call after any
    /// local edit (the simulation calls it after every input).
    pub fn pump(&mut self, now: Micros) {
        while let Some((peer, msg)) = self.doc.poll_transmit(now) {
            let addr = peer.0[0].wrapping_sub(1);
            if let Some(end) = self.ends.get_mut(&addr) {
                self.sync_messages += 1;
                self.sync_bytes += msg.len() as u64;
                end.send(&msg).expect("sync messages fit the channel");
            }
        }
    }

    fn drain_events(&mut self, now: Micros, from: u8) {
        let peer = peer_of(from);
        while let Some(e) = self.ends.get_mut(&from).and_then(|e| e.poll_event()) {
            match e {
                ReliableEvent::Message(m) => {
                    if let Err(err) = self.doc.receive_sync_message(now, peer, &m) {
                        self.sync_errors.push(err);
                    }
                }
                ReliableEvent::PeerRestarted => self.doc.reset_peer(peer),
            }
        }
    }
}

impl SimNode<u8> for MeshNode {
    fn handle_datagram(&mut self, now: Micros, from: u8, payload: &[u8]) {
        if let Some(end) = self.ends.get_mut(&from) {
            // Frames on an honest emulated network are never malformed.
            end.handle_datagram(now, payload)
                .expect("well-formed frame");
        }
        self.drain_events(now, from);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Micros) {
        for end in self.ends.values_mut() {
            if end.poll_timeout().is_some_and(|t| t <= now) {
                end.handle_timeout(now);
            }
        }
        if self.doc.poll_timeout().is_some_and(|t| t <= now) {
            self.doc.handle_timeout(now);
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self, now: Micros) -> Option<(u8, Vec<u8>)> {
        // Anything the document wants to say goes to the channels first
        // (a fresh replica's first message, an edit made between steps).
        self.pump(now);
        self.ends
            .iter_mut()
            .find_map(|(a, e)| e.poll_transmit(now).map(|d| (*a, d)))
    }

    fn poll_timeout(&self) -> Option<Micros> {
        let ends = self.ends.values().filter_map(|e| e.poll_timeout()).min();
        match (ends, self.doc.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
