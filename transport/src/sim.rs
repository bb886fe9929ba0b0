//! [`HostSim`]: runs [`Protocol`] objects — the same ones the tokio
//! [`crate::driver`] runs on real sockets — over the [`netem`](crate::netem)
//! emulator on a virtual clock.
//!
//! Each host has an IP address with a control port N and a data port N+1,
//! like a driver, and its own local clock: global virtual time plus a fixed
//! skew, so that clock synchronisation has real work to do. A datagram sent
//! from a host's port leaves from that port's address and arrives on the
//! port its destination address names; datagrams to addresses no host owns
//! vanish, as on a real network.
//!
//! Like [`crate::netem::Sim`], each step jumps to the earliest event (a
//! delivery or a host deadline), handles every delivery due, then every
//! timer due, then drains every host's transmits into the network. Events
//! are collected per host with the global time they were raised at. A run is
//! reproduced exactly by its seed.
//!
//! ```
//! use jam_transport::sim::HostSim;
//! use jam_transport::netem::LinkConfig;
//! use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
//! use jam_core::{Micros, ShortMessage};
//! use std::time::Duration;
//!
//! let mut sim = HostSim::new(1, LinkConfig::default().delay(Duration::from_millis(20)));
//! let a = sim.add_host([127, 0, 0, 1], 5004, 0, |now| Participant::new(ParticipantConfig::new("a", 1), now));
//! let b = sim.add_host([127, 0, 0, 2], 5004, 7_000_000, |now| Participant::new(ParticipantConfig::new("b", 2), now));
//! let b_control = sim.control_addr(b);
//! sim.with(a, |p, now| p.invite(now, b_control)).unwrap();
//! sim.run_for(Duration::from_secs(1));
//! sim.with(a, |p, now| p.send(now, now, ShortMessage::note_on(0, 60, 100))).unwrap();
//! sim.run_for(Duration::from_secs(1));
//! let heard = sim.take_events(b).into_iter().any(|(_, e)| matches!(e,
//!     ParticipantEvent::Midi { event, .. } if !event.recovered));
//! assert!(heard);
//! ```

use crate::applemidi::Port;
use crate::driver::Protocol;
use crate::netem::{LinkConfig, Network};
use jam_core::Micros;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

struct Host<P: Protocol> {
    protocol: P,
    control: SocketAddr,
    data: SocketAddr,
    /// The host's local clock reads global time plus `skew` µs.
    skew: u64,
    events: Vec<(Micros, P::Event)>,
}

/// Hosts running [`Protocol`] objects over an emulated network; see the
/// [module docs](self).
pub struct HostSim<P: Protocol> {
    /// The network; reconfigure links or partition it between steps.
    pub net: Network<SocketAddr>,
    hosts: Vec<Host<P>>,
    now: Micros,
}

impl<P: Protocol> HostSim<P> {
    /// An empty simulation whose links default to `link`; all randomness of
    /// the network comes from `seed`.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        HostSim {
            net: Network::new(seed, link),
            hosts: Vec::new(),
            now: Micros::ZERO,
        }
    }

    /// Adds a host at `ip` with ports `control_port` and `control_port + 1`
    /// whose clock runs `skew_us` ahead of global time; `make` builds its
    /// protocol object from its local time. Returns the host's index.
    pub fn add_host(
        &mut self,
        ip: impl Into<IpAddr>,
        control_port: u16,
        skew_us: u64,
        make: impl FnOnce(Micros) -> P,
    ) -> usize {
        let ip = ip.into();
        let local = Micros(self.now.0.saturating_add(skew_us));
        self.hosts.push(Host {
            protocol: make(local),
            control: SocketAddr::new(ip, control_port),
            data: SocketAddr::new(ip, control_port.wrapping_add(1)),
            skew: skew_us,
            events: Vec::new(),
        });
        self.hosts.len() - 1
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Global virtual time.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Host `i`'s local time.
    pub fn local_now(&self, i: usize) -> Micros {
        Micros(self.now.0.saturating_add(self.hosts[i].skew))
    }

    /// Host `i`'s local clock minus global time, in µs.
    pub fn skew(&self, i: usize) -> u64 {
        self.hosts[i].skew
    }

    /// Host `i`'s control port address.
    pub fn control_addr(&self, i: usize) -> SocketAddr {
        self.hosts[i].control
    }

    /// Host `i`'s data port address.
    pub fn data_addr(&self, i: usize) -> SocketAddr {
        self.hosts[i].data
    }

    /// The protocol object of host `i`, for reading.
    pub fn protocol(&self, i: usize) -> &P {
        &self.hosts[i].protocol
    }

    /// Runs a command on host `i` at its local time, then sends whatever it
    /// produced.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut P, Micros) -> R) -> R {
        let now = self.local_now(i);
        let r = f(&mut self.hosts[i].protocol, now);
        self.flush();
        r
    }

    /// Takes the events host `i` raised so far, each with the global time it
    /// was raised at.
    pub fn take_events(&mut self, i: usize) -> Vec<(Micros, P::Event)> {
        std::mem::take(&mut self.hosts[i].events)
    }

    fn host_for(&self, to: SocketAddr) -> Option<(usize, Port)> {
        self.hosts.iter().enumerate().find_map(|(i, h)| {
            if h.control == to {
                Some((i, Port::Control))
            } else if h.data == to {
                Some((i, Port::Data))
            } else {
                None
            }
        })
    }

    /// Sends every host's queued datagrams and collects its events.
    pub fn flush(&mut self) {
        let now = self.now;
        for h in self.hosts.iter_mut() {
            while let Some(t) = h.protocol.poll_transmit() {
                let from = match t.from {
                    Port::Control => h.control,
                    Port::Data => h.data,
                };
                self.net.send(now, from, t.to, t.payload);
            }
            while let Some(e) = h.protocol.poll_event() {
                h.events.push((now, e));
            }
        }
    }

    /// The earliest global time of a host deadline or a delivery.
    fn next_event(&self) -> Option<Micros> {
        let timers = self.hosts.iter().filter_map(|h| {
            h.protocol
                .poll_timeout()
                .map(|t| Micros(t.0.saturating_sub(h.skew)))
        });
        self.net.next_delivery().into_iter().chain(timers).min()
    }

    /// Runs the next event if it is due at or before global time `limit`;
    /// returns false (doing nothing) when there is none.
    pub fn step(&mut self, limit: Micros) -> bool {
        self.flush();
        let Some(t) = self.next_event() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        while let Some(d) = self.net.poll_deliver(now) {
            if let Some((i, port)) = self.host_for(d.to) {
                let local = Micros(now.0.saturating_add(self.hosts[i].skew));
                self.hosts[i]
                    .protocol
                    .handle_datagram(local, port, d.from, &d.payload);
            }
        }
        for h in self.hosts.iter_mut() {
            let local = Micros(now.0.saturating_add(h.skew));
            if h.protocol.poll_timeout().is_some_and(|t| t <= local) {
                h.protocol.handle_timeout(local);
            }
        }
        self.flush();
        true
    }

    /// Runs every event up to global time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Micros) {
        while self.step(t) {}
        self.now = self.now.max(t);
        self.flush();
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }
}
