//! The AppleMIDI session clock and remote-to-local time mapping.
//!
//! AppleMIDI timestamps (RTP timestamps, `CK` stamps, command delta times)
//! count 100 µs ticks of a free-running 64-bit clock with an arbitrary origin
//! (`rtp-midi.md` §0, §6.3). We run that clock off the local [`Micros`]
//! clock, so converting is a division, and a remote peer's clock maps onto
//! ours with the signed offset that clock synchronisation estimates.

use jam_core::Micros;

/// Microseconds per AppleMIDI tick (the session clock runs at 10 kHz).
pub const MICROS_PER_TICK: u64 = 100;

/// A point on an AppleMIDI session clock: 100 µs ticks since its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticks(pub u64);

impl Ticks {
    /// The local session clock reading at local time `t` (truncating).
    pub const fn from_local(t: Micros) -> Ticks {
        Ticks(t.0 / MICROS_PER_TICK)
    }

    /// The local time at which the local session clock reads `self`.
    pub const fn to_local(self) -> Micros {
        Micros(self.0.saturating_mul(MICROS_PER_TICK))
    }

    /// The low 32 bits, as carried in an RTP timestamp.
    pub const fn rtp(self) -> u32 {
        self.0 as u32
    }

    /// Unwraps a 32-bit RTP timestamp against a 64-bit reference close to it
    /// (RFC 3550 style): the 64-bit value within ±2^31 ticks of `reference`
    /// whose low 32 bits are `ts`.
    pub const fn unwrap_rtp(ts: u32, reference: Ticks) -> Ticks {
        let delta = ts.wrapping_sub(reference.0 as u32) as i32 as i64;
        Ticks(reference.0.saturating_add_signed(delta))
    }
}

/// Maps a remote peer's session clock onto the local clock.
///
/// `offset_ticks = local_ticks - remote_ticks`, as estimated by clock
/// synchronisation (`CK` exchanges, `rtp-midi.md` §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockMap {
    /// Local clock minus remote clock, in ticks.
    pub offset_ticks: i64,
}

impl ClockMap {
    /// The identity map (both clocks agree).
    pub const IDENTITY: ClockMap = ClockMap { offset_ticks: 0 };

    /// The local time at which the remote clock reads `remote`.
    pub const fn to_local(&self, remote: Ticks) -> Micros {
        Ticks(remote.0.saturating_add_signed(self.offset_ticks)).to_local()
    }

    /// The remote clock reading at local time `local`.
    pub const fn to_remote(&self, local: Micros) -> Ticks {
        Ticks(
            Ticks::from_local(local)
                .0
                .saturating_add_signed(-self.offset_ticks),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unwraps_across_the_32_bit_boundary() {
        let reference = Ticks(0x1_0000_0005);
        assert_eq!(
            Ticks::unwrap_rtp(0xFFFF_FFF0, reference),
            Ticks(0xFFFF_FFF0)
        );
        assert_eq!(Ticks::unwrap_rtp(0x10, reference), Ticks(0x1_0000_0010));
        assert_eq!(Ticks::unwrap_rtp(5, Ticks(3)), Ticks(5));
    }

    #[test]
    fn clock_map_round_trips() {
        let m = ClockMap {
            offset_ticks: -4_000_000,
        };
        let local = Micros::from_secs(1_000);
        assert_eq!(m.to_local(m.to_remote(local)), local);
    }

    proptest! {
        #[test]
        fn unwrap_inverts_truncation(t in 0u64..(1 << 50), d in -(1i64 << 30)..(1i64 << 30)) {
            let reference = Ticks(t.saturating_add_signed(d));
            prop_assert_eq!(Ticks::unwrap_rtp(Ticks(t).rtp(), reference), Ticks(t));
        }
    }
}
