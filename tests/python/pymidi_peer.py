#!/usr/bin/env python3
"""A pymidi 0.5.0 AppleMIDI responder for interop tests, bounded in time.

pymidi's Server only has serve_forever(), so this drives its protocol objects
(ControlProtocol, DataProtocol) directly with a select() loop that ends after
--timeout seconds, or once the inviting peer has said BY.

It prints one JSON object per line on stdout:
  {"event": "ready", "port": N, "control_ssrc": .., "data_ssrc": ..}
  {"event": "connected", "port": "control"|"data", "name": .., "ssrc": .., "addr": [ip, port]}
  {"event": "ck", "count": 0|2, "ssrc": ..}
  {"event": "midi", "ssrc": .., "commands": [["note_on", key, velocity], ...]}
  {"event": "disconnected", "port": "control"|"data", "ssrc": ..}
  {"event": "timeout"}
and exits 0 after a control-port BY, 3 on timeout.

pymidi quirk: its ControlProtocol and DataProtocol each draw their own random
SSRC, so one participant answers the two invitations with two SSRCs
(rtp-midi.md pitfall 9). By default this script works around that on the
test side by giving both protocol objects one SSRC; --keep-ssrc-quirk keeps
pymidi's behaviour so a test can check how the other side handles it.
"""

import argparse
import json
import random
import select
import socket
import sys
import time

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


class Data(protocol.DataProtocol):
    """pymidi's data protocol, reporting the clock syncs it handles."""

    def handle_timestamp(self, data, addr):
        pkt = packets.AppleMIDITimestampPacket.parse(data)
        emit(event="ck", count=pkt.count, ssrc=pkt.ssrc)
        super().handle_timestamp(data, addr)


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

    def midi(peer, packet):
        commands = []
        for entry in packet.command.midi_list:
            if entry.command in ("note_on", "note_off"):
                commands.append([entry.command, entry.params.key, entry.params.velocity])
            else:
                commands.append([str(entry.command)])
        emit(event="midi", ssrc=peer.ssrc, commands=commands)

    ssrc = None if args.keep_ssrc_quirk else random.randint(1, 2**32 - 1)
    data = Data(
        socket=data_sock,
        name=args.name,
        ssrc=ssrc,
        connect_cb=connected("data"),
        disconnect_cb=disconnected("data"),
        midi_command_cb=midi,
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

    deadline = time.monotonic() + args.timeout
    while not state["bye"]:
        left = deadline - time.monotonic()
        if left <= 0:
            emit(event="timeout")
            return 3
        ready, _, _ = select.select(list(by_socket), [], [], min(left, 0.2))
        for sock in ready:
            buf, addr = sock.recvfrom(2048)
            by_socket[sock].handle_message(bytes(buf), addr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
