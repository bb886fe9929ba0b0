//! A mesh of session replicas over the emulated network: each node is one
//! [`SessionSync`] (a [`jam_session_crdt::SessionDoc`] with one reliable
//! channel end per other node), the same binding the engine's worker runs
//! over the AppleMIDI side channel.
//!
//! Used by the convergence tests and the partition benchmark.

use jam_core::{Micros, PeerId};
use jam_engine::session_sync::SessionSync;
use jam_session_crdt::SessionDoc;
use jam_transport::netem::SimNode;
use jam_transport::reliable::ReliableConfig;

/// The peer id of mesh node `addr`.
pub fn peer_of(addr: u8) -> PeerId {
    PeerId([addr.wrapping_add(1); 16])
}

/// The mesh address of peer id `peer` (inverse of [`peer_of`]).
pub fn addr_of(peer: PeerId) -> u8 {
    peer.0[0].wrapping_sub(1)
}

/// One replica and its channels.
pub struct MeshNode {
    /// This node's address.
    pub addr: u8,
    /// The replica and its channel ends.
    pub sync: SessionSync,
}

impl MeshNode {
    /// A node for `doc` talking to every address in `all` but its own.
    pub fn new(addr: u8, doc: SessionDoc, all: &[u8], epoch: u32) -> MeshNode {
        let mut sync = SessionSync::new(doc, ReliableConfig::default(), epoch);
        for &a in all.iter().filter(|a| **a != addr) {
            sync.add_peer(peer_of(a));
        }
        MeshNode { addr, sync }
    }

    /// The replica.
    pub fn doc(&self) -> &SessionDoc {
        self.sync.doc()
    }

    /// The replica, for edits.
    pub fn doc_mut(&mut self) -> &mut SessionDoc {
        self.sync.doc_mut()
    }

    /// Hands every pending sync message to the channels. Call after any
    /// local edit (the simulation calls it after every input).
    pub fn pump(&mut self, now: Micros) {
        self.sync.pump(now);
    }
}

impl SimNode<u8> for MeshNode {
    fn handle_datagram(&mut self, now: Micros, from: u8, payload: &[u8]) {
        // Frames on an honest emulated network are never malformed.
        self.sync
            .handle_frame(now, peer_of(from), payload)
            .expect("well-formed frame");
    }

    fn handle_timeout(&mut self, now: Micros) {
        self.sync.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Micros) -> Option<(u8, Vec<u8>)> {
        self.sync
            .poll_transmit(now)
            .map(|(peer, frame)| (addr_of(peer), frame))
    }

    fn poll_timeout(&self) -> Option<Micros> {
        self.sync.poll_timeout()
    }
}
