//! The sender's checkpoint history: for every journal-protected element
//! (controller, note, program, ...) the packet and the order of its latest
//! command, and from that the journal of any packet for any checkpoint.
//!
//! Sequence numbers here are extended (64-bit, never wrapping). Each
//! element's [`Meta`] says in which packet its latest command went out
//! (`seq`), a stream-wide command counter (`order`), and whether it is
//! still *active* (not cancelled by a later reset command, RFC 6295 §4).
//! Values come from the sender's own [`MidiState`] and tool counters, which
//! always hold the latest state.
//!
//! Every update also appends `(key, order, seq)` to a per-channel queue in
//! command order. Walking that queue from the checkpoint on, and keeping
//! only items that are still their element's latest command, yields every
//! element to code exactly once and already oldest-first, as the chapters
//! want. Items older than the acknowledged packet are dropped from the
//! front; superseded items are compacted away when the queue grows.

use crate::rtp::journal::{
    ChapterA, ChapterC, ChapterD, ChapterE, ChapterM, ChapterN, ChapterP, ChapterQ, ChapterT,
    ChapterV, ChapterW, ControlLog, ControlTool, Counter, ExtraLog, Flagged, JournalHeader,
    LengthPatch, NoteExtra, NoteLog, NoteSet, ParamLog, Pending, PolyLog, SysExLog, chapter_x,
};
use crate::rtp::state::{
    MidiState, ParamId, ParamKind, SystemCounters, Tools, is_mode_message, uses_toggle,
};
use jam_core::ShortMessage;
use std::collections::VecDeque;

/// Latest command of one journal element.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    /// Extended sequence number of its packet; 0 = never.
    seq: u64,
    /// Stream-wide command counter.
    order: u64,
    /// Not cancelled by a later reset.
    active: bool,
}

impl Meta {
    fn touch(&mut self, seq: u64, order: u64) {
        *self = Meta {
            seq,
            order,
            active: true,
        };
    }

    fn live(&self, checkpoint: u64) -> bool {
        self.active && self.seq >= checkpoint && self.seq != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Cc(u8),
    Note(u8),
    Poly(u8),
    Program,
    Bend,
    Pressure,
    Param(ParamId),
}

#[derive(Debug, Clone, Copy)]
struct Item {
    key: Key,
    order: u64,
    seq: u64,
}

#[derive(Debug)]
struct ChannelHistory {
    cc: [Meta; 128],
    note: [Meta; 128],
    poly: [Meta; 128],
    /// A CC 120/123-127 followed the latest poly pressure of the note.
    poly_x: [bool; 128],
    program: Meta,
    /// Chapter P fields fixed at the Program Change (program, S filled in later).
    program_bank: ChapterP,
    bend: Meta,
    pressure: Meta,
    onset: [u64; 128],
    release: [u8; 128],
    refcount: [u8; 128],
    params: Vec<(ParamId, Meta)>,
    /// Latest parameter selection command (CC 98-101), for Chapter M.
    select: Meta,
    pending: Option<Pending>,
    /// Packet of the latest Note Off on this channel.
    last_note_off: u64,
    /// A CC 121 came after the latest CC 0 (Chapter P's X bit).
    reset_since_bank: bool,
    bank_seen: bool,
    recent: VecDeque<Item>,
}

impl Default for ChannelHistory {
    fn default() -> Self {
        ChannelHistory {
            cc: [Meta::default(); 128],
            note: [Meta::default(); 128],
            poly: [Meta::default(); 128],
            poly_x: [false; 128],
            program: Meta::default(),
            program_bank: ChapterP::default(),
            bend: Meta::default(),
            pressure: Meta::default(),
            onset: [0; 128],
            release: [64; 128],
            refcount: [0; 128],
            params: Vec::new(),
            select: Meta::default(),
            pending: None,
            last_note_off: 0,
            reset_since_bank: false,
            bank_seen: false,
            recent: VecDeque::new(),
        }
    }
}

impl ChannelHistory {
    fn meta(&self, key: Key) -> Meta {
        match key {
            Key::Cc(n) => self.cc[usize::from(n)],
            Key::Note(n) => self.note[usize::from(n)],
            Key::Poly(n) => self.poly[usize::from(n)],
            Key::Program => self.program,
            Key::Bend => self.bend,
            Key::Pressure => self.pressure,
            Key::Param(id) => self
                .params
                .iter()
                .find(|p| p.0 == id)
                .map(|p| p.1)
                .unwrap_or_default(),
        }
    }

    fn touch(&mut self, key: Key, seq: u64, order: u64) {
        let meta = Meta {
            seq,
            order,
            active: true,
        };
        match key {
            Key::Cc(n) => self.cc[usize::from(n)] = meta,
            Key::Note(n) => self.note[usize::from(n)] = meta,
            Key::Poly(n) => self.poly[usize::from(n)] = meta,
            Key::Program => self.program = meta,
            Key::Bend => self.bend = meta,
            Key::Pressure => self.pressure = meta,
            Key::Param(id) => match self.params.iter_mut().find(|p| p.0 == id) {
                Some(p) => p.1 = meta,
                None => self.params.push((id, meta)),
            },
        }
        self.recent.push_back(Item { key, order, seq });
    }

    fn is_latest(&self, item: &Item) -> bool {
        let m = self.meta(item.key);
        m.order == item.order && m.active
    }

    /// Drops queue items older than `checkpoint`, and superseded ones when
    /// the queue has grown well beyond the number of elements it can name.
    fn trim(&mut self, checkpoint: u64) {
        while self.recent.front().is_some_and(|i| i.seq < checkpoint) {
            self.recent.pop_front();
        }
        if self.recent.len() > 1024 {
            let mut recent = std::mem::take(&mut self.recent);
            recent.retain(|i| self.is_latest(i));
            self.recent = recent;
        }
    }

    /// Cancels everything (Reset State).
    fn reset(&mut self) {
        let mut recent = std::mem::take(&mut self.recent);
        recent.clear();
        *self = ChannelHistory {
            recent,
            ..ChannelHistory::default()
        };
    }

    /// CC 120 and 123-127 end N-activity.
    fn end_notes(&mut self) {
        for n in 0..128 {
            self.note[n].active = false;
            self.refcount[n] = 0;
            if self.poly[n].seq != 0 {
                self.poly_x[n] = true;
            }
        }
        self.pressure.active = false;
    }

    /// CC 121 ends C-activity (RP-015's controllers, bend, pressures).
    fn end_controllers(&mut self) {
        for n in [1usize, 11, 64, 65, 66, 67] {
            self.cc[n].active = false;
        }
        self.bend.active = false;
        self.pressure.active = false;
        for m in self.poly.iter_mut() {
            m.active = false;
        }
        self.pending = None;
        self.reset_since_bank = true;
    }
}

/// A complete SysEx the system journal protects (Chapter X).
#[derive(Debug)]
struct SysExEntry {
    seq: u64,
    count: u8,
    /// Data octets followed by F7 (finished) or F5 (dropped F7).
    data: Vec<u8>,
    finished: bool,
}

#[derive(Debug, Default)]
struct SystemHistory {
    reset: Meta,
    tune: Meta,
    song: Meta,
    active_sense: Meta,
    sequencer: Meta,
    sysex: VecDeque<SysExEntry>,
}

/// Scratch vectors reused for every journal build.
#[derive(Debug, Default)]
struct Scratch {
    control: Vec<ControlLog>,
    param: Vec<ParamLog>,
    note: Vec<NoteLog>,
    extra: Vec<ExtraLog>,
    poly: Vec<PolyLog>,
}

/// What the sender has sent, with the bookkeeping to build journals.
#[derive(Debug)]
pub(crate) struct History {
    midi: MidiState,
    tools: Tools,
    sys: SystemCounters,
    channels: Box<[ChannelHistory; 16]>,
    system: SystemHistory,
    order: u64,
    scratch: Scratch,
    /// SysEx up to this many octets are protected by Chapter X.
    sysex_max: usize,
}

impl History {
    pub(crate) fn new(sysex_max: usize) -> Self {
        History {
            midi: MidiState::new(),
            tools: Tools::default(),
            sys: SystemCounters::default(),
            channels: Box::default(),
            system: SystemHistory::default(),
            order: 0,
            scratch: Scratch::default(),
            sysex_max,
        }
    }

    /// What the sender has played so far.
    pub(crate) fn midi(&self) -> &MidiState {
        &self.midi
    }

    fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    /// Records a command sent in packet `seq` at sender time `time`.
    pub(crate) fn record(&mut self, seq: u64, time: u64, m: &ShortMessage) {
        let order = self.next_order();
        self.tools.apply(&self.midi, m);
        self.sys.apply(m);
        self.midi.apply(m);
        let status = m.status();
        let Some(ch) = m.channel() else {
            let s = &mut self.system;
            match status {
                0xFF => {
                    s.reset.touch(seq, order);
                    self.reset_state();
                }
                0xF6 => s.tune.touch(seq, order),
                0xF3 => s.song.touch(seq, order),
                0xFE => s.active_sense.touch(seq, order),
                0xF2 | 0xF8 | 0xFA | 0xFB | 0xFC => s.sequencer.touch(seq, order),
                _ => {}
            }
            return;
        };
        let cs = self.midi.channel(ch);
        let h = &mut self.channels[usize::from(ch)];
        let (a, b) = (m.data1(), m.data2());
        match status & 0xF0 {
            0x80 | 0x90 if m.is_note_off() => {
                let n = usize::from(a);
                h.release[n] = if status & 0xF0 == 0x80 { b } else { 64 };
                h.refcount[n] = h.refcount[n].saturating_sub(1);
                h.last_note_off = seq;
                h.touch(Key::Note(a), seq, order);
            }
            0x90 => {
                let n = usize::from(a);
                h.onset[n] = time;
                h.refcount[n] = (h.refcount[n] + 1).min(127);
                h.touch(Key::Note(a), seq, order);
            }
            0xA0 => {
                h.poly_x[usize::from(a)] = false;
                h.touch(Key::Poly(a), seq, order);
            }
            0xB0 => {
                let selected = cs.params.selected();
                match a {
                    98..=101 => {
                        h.select.touch(seq, order);
                        h.pending = (a % 2 == 1).then_some(Pending {
                            nrpn: a == 99,
                            value: b,
                        });
                        if let Some(id) = selected {
                            h.touch(Key::Param(id), seq, order);
                        }
                    }
                    6 | 38 | 96 | 97 if selected.is_some() => {
                        if let Some(id) = selected {
                            h.touch(Key::Param(id), seq, order);
                        }
                    }
                    121 => {
                        h.end_controllers();
                        h.select.touch(seq, order);
                        h.touch(Key::Cc(a), seq, order);
                    }
                    120 | 123..=127 => {
                        h.end_notes();
                        h.touch(Key::Cc(a), seq, order);
                    }
                    0 => {
                        h.bank_seen = true;
                        h.reset_since_bank = false;
                        h.touch(Key::Cc(a), seq, order);
                    }
                    _ => h.touch(Key::Cc(a), seq, order),
                }
            }
            0xC0 => {
                h.program_bank = ChapterP {
                    s: true,
                    program: a,
                    b: h.bank_seen,
                    bank_msb: cs.controllers[0],
                    x: h.bank_seen && h.reset_since_bank,
                    bank_lsb: cs.controllers[32],
                };
                h.touch(Key::Program, seq, order);
            }
            0xD0 => h.touch(Key::Pressure, seq, order),
            0xE0 => h.touch(Key::Bend, seq, order),
            _ => {}
        }
    }

    fn reset_state(&mut self) {
        for h in self.channels.iter_mut() {
            h.reset();
        }
        self.system.sysex.clear();
    }

    /// Records a complete SysEx (`F0 .. [F7]`) whose last octets went out in
    /// packet `seq`.
    pub(crate) fn record_sysex(&mut self, seq: u64, bytes: &[u8]) {
        self.next_order();
        self.tools.apply_sysex(bytes);
        self.sys.apply_sysex();
        let finished = bytes.last() == Some(&0xF7) && bytes.len() >= 2;
        let is_reset =
            finished && crate::rtp::sysex::is_reset_state_data(&bytes[1..bytes.len() - 1]);
        if is_reset {
            self.reset_state();
        }
        self.midi.apply_sysex(bytes);
        if bytes.len() <= self.sysex_max || is_reset {
            let body = if finished {
                &bytes[1..bytes.len() - 1]
            } else {
                &bytes[1..]
            };
            let mut data = Vec::with_capacity(body.len() + 1);
            data.extend_from_slice(body);
            data.push(if finished { 0xF7 } else { 0xF5 });
            self.system.sysex.push_back(SysExEntry {
                seq,
                count: self.sys.sysex,
                data,
                finished,
            });
        }
    }

    /// Forgets what the receiver has confirmed: everything before `checkpoint`.
    pub(crate) fn trim(&mut self, checkpoint: u64) {
        for h in self.channels.iter_mut() {
            h.trim(checkpoint);
        }
        while self
            .system
            .sysex
            .front()
            .is_some_and(|e| e.seq < checkpoint)
        {
            self.system.sysex.pop_front();
        }
    }

    /// Every distinct packet number from `checkpoint` on that holds a
    /// journal element, ascending (the candidate checkpoints when the
    /// journal must shrink).
    pub(crate) fn candidate_checkpoints(&self, checkpoint: u64, out: &mut Vec<u64>) {
        out.clear();
        for h in self.channels.iter() {
            out.extend(
                h.recent
                    .iter()
                    .filter(|i| i.seq >= checkpoint)
                    .map(|i| i.seq),
            );
            out.extend([h.select.seq].into_iter().filter(|&s| s >= checkpoint));
        }
        let s = &self.system;
        out.extend(
            [
                s.reset.seq,
                s.tune.seq,
                s.song.seq,
                s.active_sense.seq,
                s.sequencer.seq,
            ]
            .into_iter()
            .filter(|&q| q >= checkpoint),
        );
        out.extend(s.sysex.iter().map(|e| e.seq).filter(|&q| q >= checkpoint));
        out.sort_unstable();
        out.dedup();
    }

    /// Appends the journal of packet `this` (extended seq) for checkpoint
    /// `checkpoint` (`checkpoint <= this`), whose RTP timestamp is
    /// `packet_time`; Note Ons no older than `y_window` ticks get Y=1.
    /// Returns false (with `out` possibly extended: truncate it) when a
    /// structure would exceed its 10-bit LENGTH.
    pub(crate) fn encode_journal(
        &mut self,
        out: &mut Vec<u8>,
        checkpoint: u64,
        this: u64,
        packet_time: u64,
        y_window: u64,
    ) -> bool {
        let prev = this - 1;
        let start = out.len();
        out.extend_from_slice(&[0; JournalHeader::LEN]);
        let mut all_s = true;
        let system = match self.encode_system(out, checkpoint, prev) {
            Some(s) => s,
            None => return false,
        };
        if let Some(s) = system {
            all_s &= s;
        }
        let mut count = 0u8;
        for ch in 0..16u8 {
            match self.encode_channel(out, ch, checkpoint, prev, packet_time, y_window) {
                None => return false,
                Some(Some(s)) => {
                    all_s &= s;
                    count += 1;
                }
                Some(None) => {}
            }
        }
        let header = JournalHeader {
            s: all_s,
            y: system.is_some(),
            a: count > 0,
            h: false,
            totchan: count.saturating_sub(1),
            checkpoint: checkpoint as u16,
        };
        let mut h = Vec::with_capacity(3);
        header.encode(&mut h);
        out[start..start + 3].copy_from_slice(&h);
        true
    }

    /// Appends the system journal if it has anything to code. Returns
    /// `None` on overflow, `Some(None)` when nothing was written, else the
    /// journal's S bit.
    fn encode_system(&mut self, out: &mut Vec<u8>, c: u64, prev: u64) -> Option<Option<bool>> {
        let s = &self.system;
        let sys = self.sys;
        let counter = |m: &Meta, value: u8| {
            m.live(c).then_some(Counter {
                s: m.seq != prev,
                value,
            })
        };
        let d = ChapterD {
            s: true,
            reset: counter(&s.reset, sys.reset),
            tune: counter(&s.tune, sys.tune),
            song: sys.song.and_then(|v| counter(&s.song, v)),
            undefined: [None; 4],
        };
        let has_d = d.reset.is_some() || d.tune.is_some() || d.song.is_some();
        let v = s.active_sense.live(c).then_some(ChapterV {
            s: s.active_sense.seq != prev,
            count: sys.active_sense,
        });
        let q = s.sequencer.live(c).then_some(ChapterQ {
            s: s.sequencer.seq != prev,
            n: sys.running,
            d: sys.played,
            top: ((sys.position >> 16) & 7) as u8,
            clock: Some(sys.position as u16),
            timetools: None,
        });
        let has_x = s.sysex.iter().any(|e| e.seq >= c);
        if !has_d && v.is_none() && q.is_none() && !has_x {
            return Some(None);
        }
        let patch = LengthPatch::begin(out, 2);
        let mut all_s = true;
        let mut toc = 0u8;
        if has_d {
            toc |= 0x40;
            all_s &= [d.reset, d.tune, d.song].iter().flatten().all(|c| c.s);
            d.encode(out);
        }
        if let Some(v) = v {
            toc |= 0x20;
            all_s &= v.s;
            v.encode(out);
        }
        if let Some(q) = q {
            toc |= 0x10;
            all_s &= q.s;
            q.encode(out);
        }
        if has_x {
            toc |= 0x04;
            for e in s.sysex.iter().filter(|e| e.seq >= c) {
                let log = SysExLog {
                    s: e.seq != prev,
                    count: Some(e.count),
                    data: Some(&e.data),
                    sta: if e.finished {
                        chapter_x::sta::FINISHED
                    } else {
                        chapter_x::sta::DROPPED_F7
                    },
                    ..SysExLog::default()
                };
                all_s &= log.s;
                log.encode(out);
            }
        }
        if !patch.finish_system(out, all_s, toc) {
            return None;
        }
        Some(Some(all_s))
    }

    /// Appends channel `ch`'s journal if it has anything to code; same
    /// return convention as `encode_system`.
    fn encode_channel(
        &mut self,
        out: &mut Vec<u8>,
        ch: u8,
        c: u64,
        prev: u64,
        packet_time: u64,
        y_window: u64,
    ) -> Option<Option<bool>> {
        let h = &self.channels[usize::from(ch)];
        let cs = self.midi.channel(ch);
        let tools = &self.tools;
        let sc = &mut self.scratch;
        sc.control.clear();
        sc.param.clear();
        sc.note.clear();
        sc.extra.clear();
        sc.poly.clear();
        let mut p = None;
        let mut w = None;
        let mut t = None;
        let mut offs = NoteSet::default();
        let mut toggles = 0usize;
        for item in h.recent.iter().filter(|i| i.seq >= c) {
            if !h.is_latest(item) {
                continue;
            }
            let s = item.seq != prev;
            match item.key {
                Key::Cc(n) => {
                    let i = usize::from(n);
                    if is_mode_message(n) {
                        sc.control.push(ControlLog {
                            s,
                            number: n,
                            tool: ControlTool::Count(tools.count[usize::from(ch)][i]),
                        });
                    } else {
                        sc.control.push(ControlLog {
                            s,
                            number: n,
                            tool: ControlTool::Value(cs.controllers[i]),
                        });
                        if uses_toggle(n) {
                            toggles += 1;
                            sc.control.push(ControlLog {
                                s,
                                number: n,
                                tool: ControlTool::Toggle(tools.toggle[usize::from(ch)][i]),
                            });
                        }
                    }
                }
                Key::Note(n) => {
                    let i = usize::from(n);
                    let vel = cs.notes[i];
                    if vel > 0 {
                        let y = packet_time.saturating_sub(h.onset[i]) <= y_window;
                        sc.note.push(NoteLog {
                            s,
                            note: n,
                            y,
                            velocity: vel,
                        });
                        if h.refcount[i] > 1 {
                            sc.extra.push(ExtraLog {
                                s,
                                note: n,
                                extra: NoteExtra::Count(h.refcount[i]),
                            });
                        }
                    } else {
                        offs.insert(n);
                        if h.release[i] != 64 {
                            sc.extra.push(ExtraLog {
                                s,
                                note: n,
                                extra: NoteExtra::Release(h.release[i]),
                            });
                        }
                        if h.refcount[i] > 0 {
                            sc.extra.push(ExtraLog {
                                s,
                                note: n,
                                extra: NoteExtra::Count(h.refcount[i]),
                            });
                        }
                    }
                }
                Key::Poly(n) => {
                    let i = usize::from(n);
                    sc.poly.push(PolyLog {
                        s,
                        note: n,
                        x: h.poly_x[i],
                        pressure: cs.poly_pressure[i],
                    });
                }
                Key::Program => {
                    if let Some(prog) = cs.program {
                        p = Some(ChapterP {
                            s,
                            program: prog.number,
                            ..h.program_bank
                        });
                    }
                }
                Key::Bend => w = Some(ChapterW::new(s, cs.pitch_bend)),
                Key::Pressure => {
                    t = Some(ChapterT {
                        s,
                        pressure: cs.channel_pressure,
                    })
                }
                Key::Param(id) => {
                    let v = cs.params.value(id);
                    let entry = |x: Option<u8>| x.map(|value| Flagged { x: false, value });
                    let a_button = (v.steps != 0).then_some(Flagged {
                        x: false,
                        value: v.steps,
                    });
                    let log = ParamLog {
                        s,
                        nrpn: id.kind == ParamKind::NonRegistered,
                        number: id.number,
                        entry_msb: entry(v.msb),
                        entry_lsb: entry(v.lsb),
                        a_button,
                        v: v.msb.is_some() || v.lsb.is_some() || a_button.is_some(),
                        ..ParamLog::default()
                    };
                    sc.param.push(log);
                }
            }
        }
        // Chapter C holds at most 128 logs; the toggle logs go first (the
        // value logs alone still restore the exact state).
        if sc.control.len() > ChapterC::MAX_LOGS && toggles > 0 {
            sc.control
                .retain(|l| !matches!(l.tool, ControlTool::Toggle(_)));
        }
        if sc.control.len() > ChapterC::MAX_LOGS || sc.note.len() > 128 || sc.extra.len() > 128 {
            return None;
        }
        let select_live = h.select.live(c);
        let has_m = !sc.param.is_empty() || select_live;
        let b = h.last_note_off != prev;
        let has_n = !sc.note.is_empty() || !offs.is_empty();
        if p.is_none()
            && sc.control.is_empty()
            && !has_m
            && w.is_none()
            && !has_n
            && t.is_none()
            && sc.poly.is_empty()
        {
            return Some(None);
        }
        let patch = LengthPatch::begin(out, 3);
        let mut all_s = true;
        let mut toc = 0u8;
        if let Some(p) = p {
            toc |= 0x80;
            all_s &= p.s;
            p.encode(out);
        }
        if !sc.control.is_empty() {
            toc |= 0x40;
            all_s &= sc.control.iter().all(|l| l.s);
            ChapterC::encode(out, &sc.control);
        }
        if has_m {
            toc |= 0x20;
            let select_s = !(select_live && h.select.seq == prev);
            let s = select_s && sc.param.iter().all(|l| l.s);
            all_s &= s;
            let pending = if select_live { h.pending } else { None };
            if !ChapterM::encode(out, s, cs.params.selected().is_some(), pending, &sc.param) {
                return None;
            }
        }
        if let Some(w) = w {
            toc |= 0x10;
            all_s &= w.s;
            w.encode(out);
        }
        if has_n {
            toc |= 0x08;
            all_s &= b && sc.note.iter().all(|l| l.s);
            let b_bit = if offs.is_empty() { true } else { b };
            if !ChapterN::encode(out, b_bit, &sc.note, &offs) {
                return None;
            }
        }
        if !sc.extra.is_empty() {
            toc |= 0x04;
            all_s &= sc.extra.iter().all(|l| l.s);
            ChapterE::encode(out, &sc.extra);
        }
        if let Some(t) = t {
            toc |= 0x02;
            all_s &= t.s;
            t.encode(out);
        }
        if !sc.poly.is_empty() {
            if sc.poly.len() > 128 {
                return None;
            }
            toc |= 0x01;
            all_s &= sc.poly.iter().all(|l| l.s);
            ChapterA::encode(out, &sc.poly);
        }
        if !patch.finish_channel(out, all_s, ch, toc) {
            return None;
        }
        Some(Some(all_s))
    }
}
