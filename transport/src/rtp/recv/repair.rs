//! Applying a journal after a loss (RFC 4696 §7; `rtp-midi.md` §4.8 step 3).
//!
//! Every chapter is compared with the receiver's mirror of what it has
//! played, and only differences produce MIDI. All repair messages carry the
//! timestamp of the packet whose journal produced them.

use super::RecvStream;
use crate::rtp::journal::{
    ChannelJournal, ControlLog, ControlTool, Journal, NoteExtra, ParamLog, SystemJournal, chapter_x,
};
use crate::rtp::packet::Packet;
use crate::rtp::state::{ParamId, ParamKind, ParamValue, uses_toggle};
use jam_core::ShortMessage;

/// Unwraps a 16-bit sequence number against an extended reference.
fn unwrap_seq(seq: u16, reference: u64) -> u64 {
    let d = i64::from(seq.wrapping_sub(reference as u16) as i16);
    reference.saturating_add_signed(d)
}

impl RecvStream {
    /// Repairs the loss in front of packet `this` (extended), whose
    /// timestamp is `ts`; `prev` is the highest packet held before it
    /// (`None` at the start of the stream).
    pub(super) fn repair(
        &mut self,
        packet: &Packet<'_>,
        this: u64,
        prev: Option<u64>,
        ts: u64,
        late: bool,
    ) {
        let journal = match packet.journal() {
            Some(Ok(j)) if self.config.use_journal => Some(j),
            Some(Err(_)) => {
                self.stats.bad_journals += 1;
                None
            }
            _ => None,
        };
        let first_lost = prev.map_or(this, |h| h + 1);
        let checkpoint = journal.map(|j| unwrap_seq(j.header.checkpoint, first_lost));
        let covered = prev.is_none() || checkpoint.is_some_and(|c| c <= first_lost);
        if !covered {
            self.stats.uncovered_losses += 1;
            self.release_all(ts, false);
        }
        let Some(j) = journal else { return };
        let single = prev.is_some_and(|h| this == h + 2) && covered;
        if single && j.header.s {
            return; // the lost packet held nothing the journal protects
        }
        self.stats.repairs += 1;
        self.fb_repair = true;
        let ctx = Ctx {
            parse_all: !single,
            time: ts,
            mark: this - 1,
            checkpoint: checkpoint.unwrap_or(this),
            late,
        };
        if let Some(sj) = j.system {
            self.repair_system(&ctx, &sj);
        }
        self.repair_channels(&ctx, &j);
    }

    fn repair_channels(&mut self, ctx: &Ctx, j: &Journal<'_>) {
        for cj in j.channels() {
            if ctx.skip(cj.s) {
                continue;
            }
            self.repair_channel(ctx, &cj);
        }
    }

    fn send(&mut self, ctx: &Ctx, m: ShortMessage) {
        self.emit(ctx.time, m, true, ctx.mark);
    }

    fn repair_system(&mut self, ctx: &Ctx, sj: &SystemJournal<'_>) {
        if ctx.skip(sj.s) {
            return;
        }
        if let Some(d) = sj.d {
            if let Some(c) = d.reset.filter(|c| !ctx.skip(c.s))
                && c.value != self.mirror.sys.reset
            {
                self.send(ctx, one(0xFF));
                self.mirror.sys.reset = c.value;
            }
            if let Some(c) = d.tune.filter(|c| !ctx.skip(c.s))
                && c.value != self.mirror.sys.tune
            {
                self.send(ctx, one(0xF6));
                self.mirror.sys.tune = c.value;
            }
            if let Some(c) = d.song.filter(|c| !ctx.skip(c.s))
                && Some(c.value) != self.mirror.sys.song
                && let Ok(m) = ShortMessage::try_from_slice(&[0xF3, c.value])
            {
                self.send(ctx, m);
            }
        }
        if let Some(v) = sj.v.filter(|v| !ctx.skip(v.s)) {
            self.mirror.sys.active_sense = v.count;
        }
        if let Some(q) = sj.q.filter(|q| !ctx.skip(q.s)) {
            if q.n != self.mirror.sys.running {
                self.send(ctx, one(if q.n { 0xFB } else { 0xFC }));
            }
            if let Some(pos) = q.position()
                && pos != self.mirror.sys.position
            {
                if !q.n && pos % 6 == 0 {
                    let spp = (pos / 6) as u16;
                    if let Ok(m) = ShortMessage::try_from_slice(&[
                        0xF2,
                        (spp & 0x7F) as u8,
                        ((spp >> 7) & 0x7F) as u8,
                    ]) {
                        self.send(ctx, m);
                    }
                }
                self.mirror.sys.position = pos;
                self.mirror.sys.played = q.d;
            }
        }
        if let Some(x) = sj.x {
            for log in x.logs() {
                if ctx.skip(log.s) || log.l {
                    continue;
                }
                let finished = match log.sta {
                    chapter_x::sta::FINISHED => true,
                    chapter_x::sta::DROPPED_F7 => false,
                    _ => continue,
                };
                let (Some(count), Some(body)) = (log.count, log.body()) else {
                    continue;
                };
                if (count.wrapping_sub(self.mirror.sys.sysex) as i8) <= 0 {
                    continue;
                }
                let mut bytes = Vec::with_capacity(body.len() + 2);
                bytes.push(0xF0);
                bytes.extend_from_slice(body);
                if finished {
                    bytes.push(0xF7);
                }
                self.emit_sysex(ctx.time, bytes, true);
                self.mirror.sys.sysex = count;
            }
        }
    }

    fn repair_channel(&mut self, ctx: &Ctx, cj: &ChannelJournal<'_>) {
        let ch = cj.channel;
        let mut release = [64u8; 128];
        if let Some(e) = cj.e() {
            for l in e.logs() {
                if let NoteExtra::Release(v) = l.extra {
                    release[usize::from(l.note)] = v.max(1);
                }
            }
        }

        if let Some(p) = cj.p().filter(|p| !ctx.skip(p.s)) {
            let cs = self.mirror.midi.channel(ch);
            let same = cs.program.is_some_and(|c| {
                c.number == p.program
                    && (!p.b || (c.bank_msb == p.bank_msb && c.bank_lsb == p.bank_lsb))
            });
            if !same {
                if p.b {
                    if cs.controllers[0] != p.bank_msb {
                        self.send(ctx, ShortMessage::control_change(ch, 0, p.bank_msb));
                    }
                    if self.mirror.midi.channel(ch).controllers[32] != p.bank_lsb {
                        self.send(ctx, ShortMessage::control_change(ch, 32, p.bank_lsb));
                    }
                }
                self.send(ctx, ShortMessage::program_change(ch, p.program));
            }
        }

        let mut pedal_logged = false;
        if let Some(c) = cj.c().filter(|c| !ctx.skip(c.s) && !cj.h) {
            let mut logs = std::mem::take(&mut self.scratch);
            logs.clear();
            logs.extend(c.logs().filter(|l| !ctx.skip(l.s)));
            let mut i = 0;
            while i < logs.len() {
                let log = logs[i];
                pedal_logged |= log.number == 64;
                let next = logs.get(i + 1).copied();
                match (log.tool, next) {
                    (
                        ControlTool::Value(v),
                        Some(ControlLog {
                            number,
                            tool: ControlTool::Toggle(t),
                            ..
                        }),
                    ) if number == log.number => {
                        self.repair_toggle(ctx, ch, log.number, Some(v), t);
                        i += 2;
                        continue;
                    }
                    (ControlTool::Value(v), _) => self.repair_value(ctx, ch, log.number, v),
                    (ControlTool::Toggle(t), _) => self.repair_toggle(ctx, ch, log.number, None, t),
                    (ControlTool::Count(n), _) => {
                        let idx = (usize::from(ch), usize::from(log.number & 0x7F));
                        if self.mirror.tools.count[idx.0][idx.1] != n {
                            self.send(ctx, ShortMessage::control_change(ch, log.number, 0));
                            self.mirror.tools.count[idx.0][idx.1] = n;
                        }
                    }
                }
                i += 1;
            }
            self.scratch = logs;
        }

        if let Some(m) = cj.m().filter(|m| !ctx.skip(m.s)) {
            let mut last: Option<ParamLog> = None;
            for log in m.logs() {
                last = Some(log);
                if !ctx.skip(log.s) {
                    self.repair_param(ctx, ch, &log);
                }
            }
            match (m.e, last) {
                (true, Some(l)) => self.select_param(ctx, ch, Some(param_id(&l))),
                (false, _) => self.select_param(ctx, ch, None),
                (true, None) => {}
            }
            if let Some(p) = m.pending {
                self.send(
                    ctx,
                    ShortMessage::control_change(ch, if p.nrpn { 99 } else { 101 }, p.value),
                );
            }
        }

        if let Some(w) = cj.w().filter(|w| !ctx.skip(w.s))
            && self.mirror.midi.channel(ch).pitch_bend != w.value()
        {
            self.send(ctx, ShortMessage::pitch_bend(ch, w.value()));
        }

        if let Some(n) = cj.n() {
            let mut released = 0;
            if !ctx.skip(n.b) {
                let offs = n.offs();
                for note in 0..128u8 {
                    if !offs.contains(note) {
                        continue;
                    }
                    let i = usize::from(note);
                    if self.mirror.midi.channel(ch).notes[i] > 0 {
                        self.send(ctx, ShortMessage::note_off(ch, note, release[i]));
                        released += 1;
                    } else {
                        self.mirror.skipped[usize::from(ch)] &= !(1u128 << i);
                        self.mirror.note_seq[usize::from(ch)][i] = ctx.mark;
                    }
                }
            }
            for log in n.logs() {
                if ctx.skip(log.s) || log.velocity == 0 {
                    continue;
                }
                self.repair_note(ctx, ch, log.note, log.velocity, log.y);
            }
            // Chapter N does not order Note Offs against the sustain pedal:
            // when the pedal's state changed in the history too, damp.
            let pedal = self.mirror.midi.channel(ch).controllers[64];
            if released > 0 && pedal >= 64 && pedal_logged {
                let toggle = self.mirror.tools.toggle[usize::from(ch)][64];
                self.send(ctx, ShortMessage::control_change(ch, 64, 0));
                self.send(ctx, ShortMessage::control_change(ch, 64, pedal));
                self.mirror.tools.toggle[usize::from(ch)][64] = toggle;
            }
        }

        if let Some(t) = cj.t().filter(|t| !ctx.skip(t.s))
            && self.mirror.midi.channel(ch).channel_pressure != t.pressure
        {
            self.send(ctx, ShortMessage::channel_pressure(ch, t.pressure));
        }

        if let Some(a) = cj.a().filter(|a| !ctx.skip(a.s)) {
            for log in a.logs() {
                if !ctx.skip(log.s)
                    && self.mirror.midi.channel(ch).poly_pressure[usize::from(log.note)]
                        != log.pressure
                {
                    self.send(ctx, ShortMessage::poly_pressure(ch, log.note, log.pressure));
                }
            }
        }
    }

    fn repair_value(&mut self, ctx: &Ctx, ch: u8, number: u8, v: u8) {
        if matches!(number, 98..=101 | 120 | 121 | 123..=127) {
            return; // parameter selection is Chapter M's; mode messages use counts
        }
        if matches!(number, 6 | 38 | 96 | 97) {
            // Logged as a plain controller: nothing may be selected when it plays.
            self.select_param(ctx, ch, None);
        }
        if self.mirror.midi.channel(ch).controllers[usize::from(number)] != v {
            self.send(ctx, ShortMessage::control_change(ch, number, v));
        }
    }

    fn repair_toggle(&mut self, ctx: &Ctx, ch: u8, number: u8, value: Option<u8>, count: u8) {
        let (c, n) = (usize::from(ch), usize::from(number & 0x7F));
        let logged_on = count % 2 == 1;
        let current = self.mirror.midi.channel(ch).controllers[n];
        if self.mirror.tools.toggle[c][n] != count {
            let on = current >= 64;
            if on == logged_on && on {
                // Same state, different count: an off/on pair was lost. Damp.
                self.send(ctx, ShortMessage::control_change(ch, number, 0));
            } else if on != logged_on && value.is_none() {
                self.send(
                    ctx,
                    ShortMessage::control_change(ch, number, if logged_on { 127 } else { 0 }),
                );
            }
        }
        if let Some(v) = value
            && self.mirror.midi.channel(ch).controllers[n] != v
        {
            self.send(ctx, ShortMessage::control_change(ch, number, v));
        }
        if uses_toggle(number) || value.is_none() {
            self.mirror.tools.toggle[c][n] = count;
        }
    }

    fn select_param(&mut self, ctx: &Ctx, ch: u8, id: Option<ParamId>) {
        if self.mirror.midi.channel(ch).params.selected() == id {
            return;
        }
        let (msb_cc, lsb_cc, number) = match id {
            None => (101, 100, 0x3FFF),
            Some(ParamId {
                kind: ParamKind::Registered,
                number,
            }) => (101, 100, number),
            Some(ParamId {
                kind: ParamKind::NonRegistered,
                number,
            }) => (99, 98, number),
        };
        self.send(
            ctx,
            ShortMessage::control_change(ch, msb_cc, (number >> 7) as u8),
        );
        self.send(
            ctx,
            ShortMessage::control_change(ch, lsb_cc, (number & 0x7F) as u8),
        );
    }

    fn repair_param(&mut self, ctx: &Ctx, ch: u8, log: &ParamLog) {
        let id = param_id(log);
        let target = ParamValue {
            msb: log.entry_msb.map(|f| f.value),
            lsb: log.entry_lsb.map(|f| f.value),
            steps: log.a_button.map_or(0, |f| f.value),
        };
        let current = self.mirror.midi.channel(ch).params.value(id);
        if current == target {
            return;
        }
        self.select_param(ctx, ch, Some(id));
        let mut base = current.steps;
        if let Some(v) = target.msb {
            self.send(ctx, ShortMessage::control_change(ch, 6, v));
            base = 0;
        }
        if let Some(v) = target.lsb {
            self.send(ctx, ShortMessage::control_change(ch, 38, v));
            base = 0;
        }
        let diff = i32::from(target.steps) - i32::from(base);
        let cc = if diff > 0 { 96 } else { 97 };
        for _ in 0..diff.unsigned_abs() {
            self.send(ctx, ShortMessage::control_change(ch, cc, 0));
        }
    }

    fn repair_note(&mut self, ctx: &Ctx, ch: u8, note: u8, velocity: u8, y: bool) {
        let (c, i) = (usize::from(ch), usize::from(note & 0x7F));
        let sounding = self.mirror.midi.channel(ch).notes[i];
        let newer = self.mirror.note_seq[c][i] < ctx.checkpoint;
        if sounding > 0 {
            if !newer && sounding == velocity {
                return; // the onset we played
            }
            // A lost Off/On pair (or a retrigger): end the old note first.
            self.send(ctx, ShortMessage::note_off(ch, note, 64));
        } else if self.mirror.skipped[c] & (1u128 << i) != 0 && !newer {
            return; // already decided to skip this onset
        }
        if y && !ctx.late {
            self.send(ctx, ShortMessage::note_on(ch, note, velocity));
        } else {
            self.stats.skipped_note_ons += 1;
            self.mirror.skipped[c] |= 1u128 << i;
            self.mirror.note_seq[c][i] = ctx.mark;
        }
    }
}

fn param_id(log: &ParamLog) -> ParamId {
    ParamId {
        kind: if log.nrpn {
            ParamKind::NonRegistered
        } else {
            ParamKind::Registered
        },
        number: log.number & 0x3FFF,
    }
}

fn one(status: u8) -> ShortMessage {
    ShortMessage::try_from_slice(&[status]).expect("0xF6, 0xF8-0xFF are one-octet messages")
}

/// How to read one journal.
struct Ctx {
    /// Read every element (multi-packet loss, uncovered loss, stream start);
    /// else only S=0 ones (single-packet loss).
    parse_all: bool,
    /// Timestamp for repair messages.
    time: u64,
    /// Packet up to which the journal describes the state (I-1).
    mark: u64,
    /// The journal's checkpoint, extended.
    checkpoint: u64,
    /// The packet is too late for recovered Note Ons.
    late: bool,
}

impl Ctx {
    fn skip(&self, s: bool) -> bool {
        !self.parse_all && s
    }
}
