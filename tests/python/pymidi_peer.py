#!/usr/bin/env python3
"""A pymidi 0.5.0 AppleMIDI responder for interop tests, bounded in time.

pymidi's Server only has serve_forever(), so this drives its protocol objects
(ControlProtocol, DataProtocol) directly with a select() loop that ends after
--timeout seconds, or once the inviting peer has said BY.

It prints one JSON object per line on stdout:
  {"event": "ready", "port": N, "control_ssrc": .., "data_ssrc": ..}
  {"event": "connected", "port": "control"|"data", "name": .., "ssrc": .., "addr": [ip, port]}
  {"event": "ck", "count": 0|2, "ssrc": ..}
  {"event": "midi", ...}        an RTP-MIDI packet from a joined peer (below)
  {"event": "sent", ...}        an RTP-MIDI packet pymidi built and sent (below)
  {"event": "disconnected", "port": "control"|"data", "ssrc": ..}
  {"event": "timeout"}
and exits 0 after a control-port BY, 3 on timeout.

It reads one JSON command per line on stdin:
  {"op": "send", "commands": [[status, data1, data2], ...],
   "deltas": [null, 3, ...], "running_status": false}
      builds one RTP-MIDI packet with pymidi's own builder
      (pymidi.packets.MIDIPacket.build) and sends it from the data port to
      every peer joined on it. Commands are note on/off, poly aftertouch and
      control change (the ones pymidi's packet format knows); deltas[k] is
      the delta time before command k (k > 0), written by pymidi's builder;
      with running_status, repeated status octets are left out. Prints
      {"event": "sent", "seq", "timestamp", "hex", "t_ns"}.
  {"op": "series", "count": N, "interval_ms": F}
      sends N packets of one command each (note on / note off in turn,
      key = n % 128), one every interval_ms, and prints one "sent" line per
      packet (t_ns taken just before the packet is built).

Every "midi" line holds:
  "hex"      the datagram;
  "seq", "timestamp", "ssrc"  from its RTP header;
  "full_parse"  true if pymidi's whole-packet parser (MIDIPacket.parse,
             which DataProtocol uses) accepted it, else "full_error" says why;
  "commands" the MIDI list as pymidi's own command-section parser
             (MIDIPacketCommand) reads it: [name, channel, data1, data2,
             delta] per command (name is null for a command pymidi does not
             know; its data then holds the rest of the list in hex);
  "t_ns"     time.monotonic_ns() once pymidi has parsed the packet (the
             CLOCK_MONOTONIC reading other processes on the machine share).

pymidi quirks this script works around on the test side (rtp-midi.md §7.2):
- Its ControlProtocol and DataProtocol each draw their own random SSRC, so
  one participant answers the two invitations with two SSRCs (pitfall 9).
  By default both protocol objects get one SSRC; --keep-ssrc-quirk keeps
  pymidi's behaviour so a test can check how the other side handles it.
- Its journal parser reads a system journal whenever the journal header's
  S bit is set (instead of Y), so RFC-correct journals with S=1 and no
  system journal (the first packet of a stream, any packet after a pause)
  fail to parse and DataProtocol drops the whole packet, MIDI list
  included. This script reports that failure ("full_parse": false) and
  still decodes the MIDI list with pymidi's command-section parser, which
  is what "commands" holds.
- Delta times are read and written as LEB128 (construct's VarInt), not in
  the MIDI-file order RFC 6295 uses; one-octet deltas (0-127) agree.
- Z is ignored: a list whose first command has a delta (Z=1) is misread.
"""

import argparse
import json
import os
import random
import select
import socket
import sys
import time

from construct import ConstructError, VarInt
from pymidi import packets, protocol


def emit(**fields):
    print(json.dumps(fields), flush=True)


def bind_pair(host):
    """A control socket on a free port N and a data socket on N+1."""
    for _ in range(64):
        control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        control.bind((host, 0))
        port = control.getsockname()[1]
        if port == 65535:
            control.close()
            continue
        data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            data.bind((host, port + 1))
            return control, data, port
        except OSError:
            control.close()
            data.close()
    sys.exit("no free consecutive port pair")


def as_int(v):
    """pymidi decodes keys into enum strings ("C4") that convert to int."""
    return int(v)


def describe(midi_list):
    out = []
    for entry in midi_list:
        delta = entry.delta_time
        name = entry.command
        if name is None or entry.params is None or "unknown" in entry.params:
            rest = entry.params.unknown.hex() if entry.params is not None else ""
            out.append([None, entry.channel, rest, None, delta])
            continue
        name = str(name)
        p = entry.params
        if name in ("note_on", "note_off"):
            d1, d2 = as_int(p.key), p.velocity
        elif name == "aftertouch":
            d1, d2 = as_int(p.key), p.touch
        else:
            d1, d2 = p.controller, p.value
        out.append([name, entry.channel, d1, d2, delta])
    return out


KINDS = {
    0x80: ("note_off", "key", "velocity"),
    0x90: ("note_on", "key", "velocity"),
    0xA0: ("aftertouch", "key", "touch"),
    0xB0: ("control_mode_change", "controller", "value"),
}


class Data(protocol.DataProtocol):
    """pymidi's data protocol, reporting clock syncs and every RTP packet."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seq = random.randint(0, 0xFFFF)

    def handle_timestamp(self, data, addr):
        pkt = packets.AppleMIDITimestampPacket.parse(data)
        emit(event="ck", count=pkt.count, ssrc=pkt.ssrc)
        super().handle_timestamp(data, addr)

    def handle_data_message(self, data, addr):
        full_error = None
        try:
            packet = packets.MIDIPacket.parse(data)
            header, command = packet.header, packet.command
        except ConstructError as e:
            full_error = str(e).strip().splitlines()[-1]
            try:
                header = packets.MIDIPacketHeader.parse(data[:12])
                command = packets.MIDIPacketCommand.parse(data[12:])
            except ConstructError as e2:
                emit(event="unparsable", hex=data.hex(), error=str(e2).strip().splitlines()[-1])
                return
        t_ns = time.monotonic_ns()
        ssrc = header.ssrc
        if ssrc not in self.peers_by_ssrc:
            emit(event="ignored", ssrc=ssrc, hex=data.hex())
            return
        emit(
            event="midi",
            ssrc=ssrc,
            seq=header.rtp_header.sequence_number,
            timestamp=header.timestamp,
            hex=data.hex(),
            full_parse=full_error is None,
            full_error=full_error,
            commands=describe(command.midi_list),
            t_ns=t_ns,
        )

    def build(self, commands, deltas, running_status):
        """One RTP-MIDI packet, built by pymidi's MIDIPacket builder."""
        midi_list, length, last = [], 0, None
        for k, cmd in enumerate(commands):
            status = cmd[0]
            name, a, b = KINDS[status & 0xF0]
            delta = None
            if k > 0:
                delta = deltas[k] if deltas and deltas[k] is not None else 0
                length += len(VarInt.build(delta))
            implicit = running_status and status == last
            length += (0 if implicit else 1) + 2
            last = status
            midi_list.append({
                "delta_time": delta,
                # A peeked octet without bit 7 makes the builder leave the
                # status out (running status).
                "__next": 0 if implicit else status,
                "command_byte": status,
                "command": name,
                "channel": status & 0x0F,
                "params": {a: cmd[1], b: cmd[2]},
            })
        self.seq = (self.seq + 1) & 0xFFFF
        # pymidi's clock (the one its CK answers use): 100 us since the epoch.
        timestamp = int(time.time() * 10000) & 0xFFFFFFFF
        raw = packets.MIDIPacket.build({
            "header": {
                "rtp_header": {
                    # As pymidi's own client writes it: M=1.
                    "flags": {"v": 2, "p": False, "x": False, "cc": 0, "m": True, "pt": 0x61},
                    "sequence_number": self.seq,
                },
                "timestamp": timestamp,
                "ssrc": self.ssrc,
            },
            "command": {
                "flags": {"b": length > 15, "j": False, "z": False, "p": False, "len": length},
                "midi_list": midi_list,
            },
            "journal": None,
            # The builder's running-status branch reads the last status
            # octet from the root context (when parsing, a hook stores it).
            "_last_command_byte": last,
        })
        return raw, timestamp

    def send_midi(self, commands, deltas=None, running_status=False):
        t_ns = time.monotonic_ns()
        raw, timestamp = self.build(commands, deltas, running_status)
        for peer in list(self.peers_by_ssrc.values()):
            self.socket.sendto(raw, peer.addr)
        emit(event="sent", seq=self.seq, timestamp=timestamp, hex=raw.hex(), t_ns=t_ns)


class Series:
    """Notes sent at a fixed interval from the select loop."""

    def __init__(self, count, interval_ms):
        self.left = count
        self.n = 0
        self.interval = interval_ms / 1000.0
        self.next = time.monotonic()

    def due(self, data):
        while self.left > 0 and time.monotonic() >= self.next:
            status = 0x90 if self.n % 2 == 0 else 0x80
            data.send_midi([[status, (self.n // 2) % 128, 100 if status == 0x90 else 0]])
            self.n += 1
            self.left -= 1
            self.next += self.interval

    def wait(self):
        return max(0.0, self.next - time.monotonic()) if self.left > 0 else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--name", default="pymidi")
    parser.add_argument("--keep-ssrc-quirk", action="store_true")
    args = parser.parse_args()

    control_sock, data_sock, port = bind_pair(args.host)
    state = {"bye": False}

    def connected(kind):
        def cb(peer):
            emit(event="connected", port=kind, name=peer.name, ssrc=peer.ssrc, addr=list(peer.addr))
        return cb

    def disconnected(kind):
        def cb(peer):
            emit(event="disconnected", port=kind, ssrc=peer.ssrc)
            if kind == "control":
                state["bye"] = True
        return cb

    ssrc = None if args.keep_ssrc_quirk else random.randint(1, 2**32 - 1)
    data = Data(
        socket=data_sock,
        name=args.name,
        ssrc=ssrc,
        connect_cb=connected("data"),
        disconnect_cb=disconnected("data"),
    )
    control = protocol.ControlProtocol(
        socket=control_sock,
        name=args.name,
        ssrc=ssrc,
        connect_cb=connected("control"),
        disconnect_cb=disconnected("control"),
    )
    control.associate_data_protocol(data)
    by_socket = {control_sock: control, data_sock: data}
    emit(event="ready", port=port, control_ssrc=control.ssrc, data_ssrc=data.ssrc)

    stdin_fd = sys.stdin.fileno()
    stdin_open, pending = True, b""
    series = None
    deadline = time.monotonic() + args.timeout
    while not state["bye"]:
        left = deadline - time.monotonic()
        if left <= 0:
            emit(event="timeout")
            return 3
        wait = min(left, 0.2)
        if series is not None and series.wait() is not None:
            wait = min(wait, series.wait())
        readable = list(by_socket) + ([stdin_fd] if stdin_open else [])
        ready, _, _ = select.select(readable, [], [], wait)
        for r in ready:
            if r == stdin_fd:
                chunk = os.read(stdin_fd, 65536)
                if not chunk:
                    stdin_open = False
                    continue
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    cmd = json.loads(line)
                    if cmd["op"] == "send":
                        data.send_midi(cmd["commands"], cmd.get("deltas"), cmd.get("running_status", False))
                    elif cmd["op"] == "series":
                        series = Series(cmd["count"], cmd["interval_ms"])
                    else:
                        sys.exit("unknown op {}".format(cmd["op"]))
                continue
            buf, addr = r.recvfrom(2048)
            by_socket[r].handle_message(bytes(buf), addr)
        if series is not None:
            series.due(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
