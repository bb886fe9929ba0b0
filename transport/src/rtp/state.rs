//! [`MidiState`]: what a stream of MIDI commands leaves behind on 16
//! channels, so that "what the sender played" and "what the receiver played"
//! can be compared, and stuck notes counted.
//!
//! The model follows the recovery journal's view of MIDI (RFC 6295 Appendix
//! A), so that a receiver that repairs losses from the journal ends in
//! exactly the sender's state:
//!
//! - `notes`: keys down (Note On without a later Note Off), with velocity.
//!   The sustain pedal does not hold notes here; it is a controller value.
//! - `controllers`: the latest value of every controller number, 0 until
//!   set. The parameter-system controllers (6, 38, 96, 97 while a parameter
//!   is selected; 98-101 always) live in [`ParamState`] instead; the channel
//!   mode messages (120-127 except 122, Local Control) are commands, not
//!   values, and are not stored.
//! - `program`: the latest Program Change with the bank (CC 0 / CC 32
//!   values) in force at that moment.
//! - `pitch_bend` (8192 = centre), `channel_pressure`, `poly_pressure`.
//!
//! Commands with effects on several values:
//!
//! - CC 120 and CC 123-127 release every note and zero channel pressure
//!   (RFC 6295: they end "N-activity", which Chapters N, E and T follow).
//! - CC 121 (Reset All Controllers) does what MMA RP-015 lists: modulation
//!   (1) to 0, expression (11) to 127, pedals 64-67 to 0, RPN/NRPN selection
//!   to null, pitch bend to centre, channel and poly pressure to 0.
//! - System Reset (0xFF) and the Reset State SysEx commands (GM On/Off, GM2
//!   On, DLS On/Off) reset every channel to its initial state.

use super::sysex::is_reset_state_data;
use jam_core::ShortMessage;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Which parameter space a parameter number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParamKind {
    /// Registered Parameter Number (CC 101 / CC 100).
    Registered,
    /// Non-Registered Parameter Number (CC 99 / CC 98).
    NonRegistered,
}

/// A parameter: its space and 14-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId {
    /// RPN or NRPN.
    pub kind: ParamKind,
    /// The 14-bit number (MSB << 7 | LSB).
    pub number: u16,
}

/// A parameter's value as Data Entry and Data Increment/Decrement left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ParamValue {
    /// Latest Data Entry MSB (CC 6).
    pub msb: Option<u8>,
    /// Latest Data Entry LSB (CC 38).
    pub lsb: Option<u8>,
    /// Increments minus decrements (CC 96 / 97) since the latest Data Entry,
    /// within ±16383.
    pub steps: i16,
}

/// RPN/NRPN state of one channel: which parameter Data Entry addresses, and
/// the value of every parameter set so far.
///
/// Equality compares the selected parameter and the values, not the raw
/// selection registers behind them.
#[derive(Debug, Clone)]
pub struct ParamState {
    registers: [[u8; 2]; 2],
    last: Option<ParamKind>,
    values: BTreeMap<ParamId, ParamValue>,
}

impl Default for ParamState {
    fn default() -> Self {
        ParamState {
            registers: [[127; 2]; 2],
            last: None,
            values: BTreeMap::new(),
        }
    }
}

impl PartialEq for ParamState {
    fn eq(&self, other: &Self) -> bool {
        self.selected() == other.selected() && self.values == other.values
    }
}

impl Eq for ParamState {}

impl ParamState {
    /// The parameter Data Entry currently addresses (`None` when nothing or
    /// the null parameter 7F 7F is selected).
    pub fn selected(&self) -> Option<ParamId> {
        let kind = self.last?;
        let [msb, lsb] = self.registers[kind as usize];
        if msb == 127 && lsb == 127 {
            return None;
        }
        Some(ParamId {
            kind,
            number: (u16::from(msb) << 7) | u16::from(lsb),
        })
    }

    /// Every parameter set so far.
    pub fn values(&self) -> &BTreeMap<ParamId, ParamValue> {
        &self.values
    }

    /// One parameter's value.
    pub fn value(&self, id: ParamId) -> ParamValue {
        self.values.get(&id).copied().unwrap_or_default()
    }

    fn select(&mut self, kind: ParamKind, half: usize, v: u8) {
        self.registers[kind as usize][half] = v;
        self.last = Some(kind);
    }

    fn null(&mut self) {
        self.registers = [[127; 2]; 2];
    }

    /// Applies a parameter-system controller; false when `number` is a
    /// data controller and no parameter is selected (a plain controller).
    fn apply(&mut self, number: u8, v: u8) -> bool {
        match number {
            99 => self.select(ParamKind::NonRegistered, 0, v),
            98 => self.select(ParamKind::NonRegistered, 1, v),
            101 => self.select(ParamKind::Registered, 0, v),
            100 => self.select(ParamKind::Registered, 1, v),
            6 | 38 | 96 | 97 => {
                let Some(id) = self.selected() else {
                    return false;
                };
                let p = self.values.entry(id).or_default();
                match number {
                    6 => {
                        p.msb = Some(v);
                        p.steps = 0;
                    }
                    38 => {
                        p.lsb = Some(v);
                        p.steps = 0;
                    }
                    96 => p.steps = (p.steps + 1).min(0x3FFF),
                    _ => p.steps = (p.steps - 1).max(-0x3FFF),
                }
            }
            _ => return false,
        }
        true
    }
}

/// A Program Change with the bank in force when it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Program {
    /// Program number.
    pub number: u8,
    /// CC 0 value at the Program Change.
    pub bank_msb: u8,
    /// CC 32 value at the Program Change.
    pub bank_lsb: u8,
}

/// The state of one MIDI channel; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// Velocity of every key that is down (0 = up).
    pub notes: [u8; 128],
    /// Latest controller values (see the module docs for exceptions).
    pub controllers: [u8; 128],
    /// Latest Program Change.
    pub program: Option<Program>,
    /// Pitch bend, 14 bits, 8192 = centre.
    pub pitch_bend: u16,
    /// Channel pressure.
    pub channel_pressure: u8,
    /// Poly pressure per key.
    pub poly_pressure: [u8; 128],
    /// RPN/NRPN state.
    pub params: ParamState,
}

impl Default for ChannelState {
    fn default() -> Self {
        ChannelState {
            notes: [0; 128],
            controllers: [0; 128],
            program: None,
            pitch_bend: 8192,
            channel_pressure: 0,
            poly_pressure: [0; 128],
            params: ParamState::default(),
        }
    }
}

/// True for the controller numbers whose value [`MidiState`] does not keep
/// (channel mode messages other than Local Control).
pub const fn is_mode_message(number: u8) -> bool {
    matches!(number, 120 | 121 | 123..=127)
}

impl ChannelState {
    fn control_change(&mut self, number: u8, v: u8) {
        match number {
            6 | 38 | 96..=101 if self.params.apply(number, v) => {}
            120 | 123..=127 => {
                self.notes = [0; 128];
                self.channel_pressure = 0;
            }
            121 => {
                self.controllers[1] = 0;
                self.controllers[11] = 127;
                for n in 64..=67 {
                    self.controllers[n] = 0;
                }
                self.pitch_bend = 8192;
                self.channel_pressure = 0;
                self.poly_pressure = [0; 128];
                self.params.null();
            }
            _ => self.controllers[usize::from(number & 0x7F)] = v,
        }
    }

    fn apply(&mut self, m: &ShortMessage) {
        let (a, b) = (usize::from(m.data1() & 0x7F), m.data2());
        match m.status() & 0xF0 {
            0x80 => self.notes[a] = 0,
            0x90 => self.notes[a] = b,
            0xA0 => self.poly_pressure[a] = b,
            0xB0 => self.control_change(a as u8, b),
            0xC0 => {
                self.program = Some(Program {
                    number: a as u8,
                    bank_msb: self.controllers[0],
                    bank_lsb: self.controllers[32],
                })
            }
            0xD0 => self.channel_pressure = a as u8,
            0xE0 => self.pitch_bend = (u16::from(b) << 7) | a as u16,
            _ => {}
        }
    }

    /// Number of keys down.
    pub fn sounding_count(&self) -> usize {
        self.notes.iter().filter(|&&v| v > 0).count()
    }
}

/// The state of all 16 channels; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MidiState {
    channels: [ChannelState; 16],
}

impl MidiState {
    /// Every channel in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates the state with one command.
    pub fn apply(&mut self, m: &ShortMessage) {
        match m.channel() {
            Some(ch) => self.channels[usize::from(ch)].apply(m),
            None if m.status() == 0xFF => self.reset(),
            None => {}
        }
    }

    /// Updates the state with a SysEx message (`F0 .. [F7]`): the Reset
    /// State commands reset every channel; others leave the state alone.
    pub fn apply_sysex(&mut self, bytes: &[u8]) {
        if let [0xF0, data @ .., 0xF7] = bytes
            && is_reset_state_data(data)
        {
            self.reset();
        }
    }

    /// Back to the initial state.
    pub fn reset(&mut self) {
        *self = MidiState::default();
    }

    /// One channel (0-15, masked).
    pub fn channel(&self, channel: u8) -> &ChannelState {
        &self.channels[usize::from(channel & 0x0F)]
    }

    /// Every key down, as (channel, note, velocity).
    pub fn sounding(&self) -> impl Iterator<Item = (u8, u8, u8)> + '_ {
        self.channels.iter().enumerate().flat_map(|(ch, c)| {
            c.notes
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0)
                .map(move |(n, v)| (ch as u8, n as u8, *v))
        })
    }

    /// Number of keys down on all channels.
    pub fn sounding_count(&self) -> usize {
        self.channels.iter().map(ChannelState::sounding_count).sum()
    }

    /// A readable list of everything that differs from `other` (empty when
    /// equal), for test failures and diagnostics.
    pub fn differences(&self, other: &MidiState) -> Vec<String> {
        let mut out = Vec::new();
        for (ch, (a, b)) in self.channels.iter().zip(&other.channels).enumerate() {
            let arrays: [(&str, &[u8; 128], &[u8; 128]); 3] = [
                ("note", &a.notes, &b.notes),
                ("cc", &a.controllers, &b.controllers),
                ("poly pressure", &a.poly_pressure, &b.poly_pressure),
            ];
            for (what, x, y) in arrays {
                for n in 0..128 {
                    if x[n] != y[n] {
                        out.push(format!("ch {ch} {what} {n}: {} vs {}", x[n], y[n]));
                    }
                }
            }
            let mut line = String::new();
            if a.program != b.program {
                let _ = write!(line, "program {:?} vs {:?}; ", a.program, b.program);
            }
            if a.pitch_bend != b.pitch_bend {
                let _ = write!(line, "bend {} vs {}; ", a.pitch_bend, b.pitch_bend);
            }
            if a.channel_pressure != b.channel_pressure {
                let _ = write!(
                    line,
                    "pressure {} vs {}; ",
                    a.channel_pressure, b.channel_pressure
                );
            }
            if a.params != b.params {
                let _ = write!(
                    line,
                    "params {:?} {:?} vs {:?} {:?}; ",
                    a.params.selected(),
                    a.params.values(),
                    b.params.selected(),
                    b.params.values()
                );
            }
            if !line.is_empty() {
                out.push(format!("ch {ch} {line}"));
            }
        }
        out
    }
}

/// The toggle and count tools of Chapter C, tracked identically by sender
/// and receiver: per channel and controller, the off/on flips and the
/// commands, both mod 64 (RFC 6295 Appendix A.3.3).
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub(crate) toggle: [[u8; 128]; 16],
    pub(crate) count: [[u8; 128]; 16],
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            toggle: [[0; 128]; 16],
            count: [[0; 128]; 16],
        }
    }
}

/// Controllers our sender codes with the toggle tool (pedals).
pub(crate) const fn uses_toggle(number: u8) -> bool {
    matches!(number, 64..=69)
}

impl Tools {
    /// Updates the tools for `m`; call *before* applying `m` to `state`.
    pub(crate) fn apply(&mut self, state: &MidiState, m: &ShortMessage) {
        if m.status() == 0xFF {
            *self = Tools::default();
            return;
        }
        if m.status() & 0xF0 != 0xB0 {
            return;
        }
        let ch = usize::from(m.status() & 0x0F);
        let (n, v) = (usize::from(m.data1()), m.data2());
        let cs = &state.channels[ch];
        self.count[ch][n] = (self.count[ch][n] + 1) % 64;
        if uses_toggle(n as u8) && (cs.controllers[n] >= 64) != (v >= 64) {
            self.toggle[ch][n] = (self.toggle[ch][n] + 1) % 64;
        }
        if n == 121 {
            for p in 64..=67 {
                if cs.controllers[p] >= 64 {
                    self.toggle[ch][p] = (self.toggle[ch][p] + 1) % 64;
                }
            }
        }
    }

    pub(crate) fn apply_sysex(&mut self, bytes: &[u8]) {
        if let [0xF0, data @ .., 0xF7] = bytes
            && is_reset_state_data(data)
        {
            *self = Tools::default();
        }
    }
}

/// System-command counters of the system journal (Chapters D, V, Q, X),
/// tracked identically by sender and receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SystemCounters {
    /// System Resets, mod 128.
    pub(crate) reset: u8,
    /// Tune Requests, mod 128.
    pub(crate) tune: u8,
    /// Latest Song Select.
    pub(crate) song: Option<u8>,
    /// Active Sense commands, mod 128.
    pub(crate) active_sense: u8,
    /// Start/Continue more recent than Stop.
    pub(crate) running: bool,
    /// Song position in MIDI clocks, mod 2^19.
    pub(crate) position: u32,
    /// The latest position change was a Clock (the position was played).
    pub(crate) played: bool,
    /// Complete SysEx commands, mod 256.
    pub(crate) sysex: u8,
}

impl SystemCounters {
    pub(crate) fn apply(&mut self, m: &ShortMessage) {
        match m.status() {
            0xFF => self.reset = (self.reset + 1) % 128,
            0xF6 => self.tune = (self.tune + 1) % 128,
            0xF3 => self.song = Some(m.data1()),
            0xFE => self.active_sense = (self.active_sense + 1) % 128,
            0xFA => {
                self.running = true;
                self.position = 0;
                self.played = false;
            }
            0xFB => self.running = true,
            0xFC => self.running = false,
            0xF8 if self.running => {
                self.position = (self.position + 1) & 0x7_FFFF;
                self.played = true;
            }
            0xF2 => {
                let spp = (u32::from(m.data2()) << 7) | u32::from(m.data1());
                self.position = (spp * 6) & 0x7_FFFF;
                self.played = false;
            }
            _ => {}
        }
    }

    pub(crate) fn apply_sysex(&mut self) {
        self.sysex = self.sysex.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(ch: u8, n: u8, v: u8) -> ShortMessage {
        ShortMessage::control_change(ch, n, v)
    }

    #[test]
    fn notes_controllers_program_and_resets() {
        let mut s = MidiState::new();
        s.apply(&ShortMessage::note_on(0, 60, 100));
        s.apply(&ShortMessage::note_on(0, 62, 90));
        s.apply(&ShortMessage::note_on(0, 62, 0));
        assert_eq!(s.sounding().collect::<Vec<_>>(), vec![(0, 60, 100)]);
        s.apply(&cc(0, 0, 3));
        s.apply(&cc(0, 32, 4));
        s.apply(&ShortMessage::program_change(0, 9));
        assert_eq!(
            s.channel(0).program,
            Some(Program {
                number: 9,
                bank_msb: 3,
                bank_lsb: 4
            })
        );
        s.apply(&ShortMessage::pitch_bend(0, 100));
        s.apply(&ShortMessage::channel_pressure(0, 50));
        s.apply(&cc(0, 1, 70));
        s.apply(&cc(0, 7, 90));
        s.apply(&cc(0, 121, 0));
        let c = s.channel(0);
        assert_eq!(
            (
                c.pitch_bend,
                c.channel_pressure,
                c.controllers[1],
                c.controllers[7]
            ),
            (8192, 0, 0, 90)
        );
        s.apply(&cc(0, 123, 0));
        assert_eq!(s.sounding_count(), 0);
        s.apply(&ShortMessage::note_on(3, 1, 1));
        s.apply_sysex(&[0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7]);
        assert_eq!(s, MidiState::new());
    }

    #[test]
    fn parameters_follow_selection() {
        let mut s = MidiState::new();
        s.apply(&cc(0, 6, 5)); // nothing selected: a plain controller
        assert_eq!(s.channel(0).controllers[6], 5);
        s.apply(&cc(0, 101, 0));
        s.apply(&cc(0, 100, 0));
        s.apply(&cc(0, 6, 12));
        s.apply(&cc(0, 96, 0));
        let id = ParamId {
            kind: ParamKind::Registered,
            number: 0,
        };
        assert_eq!(s.channel(0).params.selected(), Some(id));
        assert_eq!(
            s.channel(0).params.value(id),
            ParamValue {
                msb: Some(12),
                lsb: None,
                steps: 1
            }
        );
        assert_eq!(s.channel(0).controllers[6], 5);
        s.apply(&cc(0, 101, 127));
        s.apply(&cc(0, 100, 127));
        assert_eq!(s.channel(0).params.selected(), None);
    }

    #[test]
    fn tools_count_flips_and_commands() {
        let mut s = MidiState::new();
        let mut t = Tools::default();
        for m in [
            cc(0, 64, 127),
            cc(0, 64, 100),
            cc(0, 64, 0),
            cc(0, 64, 127),
            cc(0, 121, 0),
            cc(0, 123, 0),
        ] {
            t.apply(&s, &m);
            s.apply(&m);
        }
        assert_eq!(t.toggle[0][64], 4, "on, off, on, off by CC 121");
        assert_eq!(t.count[0][64], 4);
        assert_eq!(t.count[0][123], 1);
    }

    #[test]
    fn differences_name_what_differs() {
        let a = MidiState::new();
        let mut b = MidiState::new();
        b.apply(&ShortMessage::note_on(2, 60, 1));
        let d = a.differences(&b);
        assert_eq!(d, vec!["ch 2 note 60: 0 vs 1".to_string()]);
    }
}
