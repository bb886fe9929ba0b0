//! The event model: what crosses the real-time bridge, in both directions.
//!
//! Every type here is `Copy` and small, so it moves through fixed-capacity
//! rings and preallocated buffers without ever touching the heap.

use jam_core::{Beats, Micros, PeerId, ShortMessage};
use std::mem::MaybeUninit;

/// A MIDI message that knows when and where on the timeline it was played.
///
/// This is what a sender puts on the wire: the message, the sender's local
/// clock time at the sample it was played, the beat on the shared timeline at
/// that sample, and who played it. A receiver that maps the sender's clock onto
/// its own can therefore tell exactly how late the event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampedEvent {
    /// The MIDI message (channel as played).
    pub msg: ShortMessage,
    /// The sender's local clock at the sample the event was played.
    pub sent_at: Micros,
    /// The beat on the timeline at that sample (host transport while it
    /// plays, else the session timeline).
    pub beat: Beats,
    /// Who played it.
    pub origin: PeerId,
}

/// A note (or other short MIDI message) from the host, at a sample offset in
/// the current block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostEvent {
    /// Sample offset from the start of the block.
    pub offset: u32,
    /// The message.
    pub msg: ShortMessage,
}

/// A remote participant's event as the worker hands it to the audio thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEvent {
    /// The participant's slot (0..[`crate::MAX_PEERS`]): output MIDI channel,
    /// monitor timbre and row in the peer table.
    pub slot: u8,
    /// The message (its channel is replaced by the slot on output).
    pub msg: ShortMessage,
    /// The sender's beat for the event, when the transport carried it;
    /// `None`: the beat of `sent_at` on this host's timeline.
    pub beat: Option<Beats>,
    /// The sender's clock time, already mapped onto the local clock.
    pub sent_at: Micros,
    /// When the event reached this machine (local clock).
    pub arrival: Micros,
    /// True when the recovery journal rebuilt the event after a loss.
    pub recovered: bool,
}

/// An event placed in the current block: what the plugin sends to the host's
/// note output and what the monitor synth plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutEvent {
    /// Sample offset from the start of the block.
    pub offset: u32,
    /// The message, on the participant's channel.
    pub msg: ShortMessage,
    /// The participant's slot (equal to the channel for channel messages).
    pub slot: u8,
    /// What the network delivered, for remote events; `None` for what the
    /// engine made itself (note-offs releasing hanging notes).
    pub source: Option<Received>,
}

/// A remote event as it was received, before placement re-channeled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message as the participant played it (its own channel).
    pub played: ShortMessage,
    /// When it reached this machine (local clock).
    pub arrival: Micros,
    /// True when the recovery journal rebuilt it after a loss.
    pub recovered: bool,
}

/// An empty vector with room for `capacity` items whose memory has already
/// been written once. Allocates.
///
/// Fresh heap memory is only mapped on its first write; if that write came
/// from the audio thread, each new page would cost it a page fault, and under
/// memory pressure the kernel may put the faulting thread to sleep while it
/// reclaims a page. Writing the buffer here, on the thread that builds it,
/// takes those faults off the audio thread.
pub(crate) fn prefaulted_vec<T>(capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity);
    prefault(v.spare_capacity_mut());
    v
}

/// Writes every slot of `slots` (zeros), so its pages are mapped now.
pub(crate) fn prefault<T>(slots: &mut [MaybeUninit<T>]) {
    slots.fill_with(MaybeUninit::zeroed);
    // Keep the writes: nothing reads them before they are overwritten.
    std::hint::black_box(slots);
}

/// A vector whose capacity is fixed at construction and never grows: pushing
/// into a full buffer hands the value back instead of reallocating.
///
/// Realtime-safe: every method but [`EventBuffer::with_capacity`] (which
/// allocates once, on a non-real-time thread).
#[derive(Debug, Clone)]
pub struct EventBuffer<T> {
    items: Vec<T>,
}

impl<T> EventBuffer<T> {
    /// An empty buffer that holds up to `capacity` items. Allocates, and
    /// writes the whole buffer once, so that pushing into it never faults
    /// in a fresh page on the audio thread.
    pub fn with_capacity(capacity: usize) -> Self {
        EventBuffer {
            items: prefaulted_vec(capacity),
        }
    }

    /// Appends `item`, or returns it when the buffer is full.
    /// Realtime-safe: yes.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.items.len() == self.items.capacity() {
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }

    /// Removes every item (keeps the capacity). Realtime-safe: yes.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The items in order.
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }

    /// The items in order, mutably (for in-place sorting and filtering).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items
    }

    /// Keeps only the items for which `keep` returns true, in order.
    /// Realtime-safe: yes (in place).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.items.retain(keep);
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when one more push would fail.
    pub fn is_full(&self) -> bool {
        self.items.len() == self.items.capacity()
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_hands_the_item_back_and_keeps_its_capacity() {
        let mut b = EventBuffer::with_capacity(2);
        assert_eq!(b.push(1), Ok(()));
        assert_eq!(b.push(2), Ok(()));
        assert!(b.is_full());
        assert_eq!(b.push(3), Err(3));
        assert_eq!(b.capacity(), 2);
        b.retain(|&x| x == 2);
        assert_eq!(b.as_slice(), &[2]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 2);
    }
}
