//! The tokio UDP driver: the only code in this crate that owns sockets and
//! timers.
//!
//! A [`Driver`] binds an AppleMIDI port pair (control N, data N+1) and runs
//! one task that owns a sans-IO [`Protocol`] object (an
//! [`Endpoint`], or a richer object that wraps one). The task selects over
//! - the command channel (closures run against the protocol object),
//! - the control socket and the data socket,
//! - the protocol's earliest deadline (`tokio::time::sleep_until`),
//!
//! and after every input it drains the outputs in this order:
//!
//! 1. [`Protocol::poll_transmit`] until `None`, sending each datagram from
//!    the socket of its [`Port`] (lowest latency first);
//! 2. [`Protocol::poll_event`] until `None`, sending each event into the
//!    event channel (unbounded, so the task never waits on a reader that is
//!    itself waiting on a [`DriverHandle::call`]; events are dropped only
//!    once the receiver is gone, and pile up if it is never read), then,
//!    if there were any, yielding once so that a reader on the same
//!    runtime takes them before the task polls its sockets again;
//! 3. [`Protocol::poll_timeout`] for the next deadline (one timer for the
//!    task's life, moved only when the deadline moves).
//!
//! Time comes from an injected [`Clock`] ([`jam_core::MonotonicClock`] in
//! production, [`TokioClock`] in tests under tokio's paused time). The
//! driver never hands the protocol a `now` earlier than a previous one, and
//! hands a timer at least its own deadline, so a protocol never sees time go
//! backwards or wakes up too early.
//!
//! ```no_run
//! use jam_transport::applemidi::{Endpoint, EndpointConfig, EndpointEvent};
//! use jam_transport::driver::{Driver, DriverConfig};
//! use jam_core::MonotonicClock;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (driver, mut events) = Driver::spawn(
//!     DriverConfig::loopback(),
//!     MonotonicClock::new(),
//!     |now| Endpoint::new(EndpointConfig::new("jam", 1), now),
//! )
//! .await?;
//! let peer_control = "127.0.0.1:5004".parse()?;
//! let peer = driver.call(move |ep, now| ep.invite(now, peer_control)).await??;
//! while let Some(event) = events.recv().await {
//!     if let EndpointEvent::Joined { .. } = event {
//!         driver.call(move |ep, _| ep.send_rtp(peer, vec![0x80, 0x61 /* ... */])).await??;
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::applemidi::{Endpoint, EndpointEvent, Port, Transmit};
use jam_core::{Clock, Micros};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A sans-IO protocol object a [`Driver`] can run: input through
/// `handle_*`, output through `poll_*` (see the [module docs](self) for the
/// poll order). [`Endpoint`] implements it; a richer object (an endpoint
/// plus RTP-MIDI streams) implements it by delegating to its endpoint and
/// adding its own transmits, events and deadlines.
///
/// A sketch of such an object: it lets the endpoint handle sessions, turns
/// the endpoint's RTP events into its own, and adds a timer of its own.
///
/// ```
/// use jam_core::Micros;
/// use jam_transport::applemidi::{Endpoint, EndpointEvent, PeerHandle, Port, Transmit};
/// use jam_transport::driver::Protocol;
/// use std::net::SocketAddr;
///
/// enum Event { Session(EndpointEvent), Midi(PeerHandle, Vec<u8>) }
///
/// struct Stack { endpoint: Endpoint, events: Vec<Event>, feedback_at: Option<Micros> }
///
/// impl Protocol for Stack {
///     type Event = Event;
///     fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]) {
///         self.endpoint.handle_datagram(now, local, from, bytes);
///         while let Some(e) = self.endpoint.poll_event() {
///             match e {
///                 // An RTP stream would decode `packet` here.
///                 EndpointEvent::Rtp { peer, packet } => self.events.push(Event::Midi(peer, packet)),
///                 other => self.events.push(Event::Session(other)),
///             }
///         }
///     }
///     fn handle_timeout(&mut self, now: Micros) {
///         self.endpoint.handle_timeout(now);
///         if self.feedback_at.is_some_and(|t| t <= now) {
///             self.feedback_at = None; // e.g. send_feedback for each stream
///         }
///     }
///     fn poll_transmit(&mut self) -> Option<Transmit> {
///         self.endpoint.poll_transmit()
///     }
///     fn poll_timeout(&self) -> Option<Micros> {
///         [self.endpoint.poll_timeout(), self.feedback_at].into_iter().flatten().min()
///     }
///     fn poll_event(&mut self) -> Option<Event> {
///         // Endpoint events raised by commands or timers are picked up too.
///         while let Some(e) = self.endpoint.poll_event() {
///             self.events.push(Event::Session(e));
///         }
///         (!self.events.is_empty()).then(|| self.events.remove(0))
///     }
/// }
/// ```
pub trait Protocol: Send + 'static {
    /// What the protocol reports to the application.
    type Event: Send + 'static;
    /// A datagram arrived on `local` from `from`.
    fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]);
    /// The deadline from [`Protocol::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Micros);
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The earliest time `handle_timeout` must be called.
    fn poll_timeout(&self) -> Option<Micros>;
    /// The next event for the application.
    fn poll_event(&mut self) -> Option<Self::Event>;
}

impl Protocol for Endpoint {
    type Event = EndpointEvent;
    fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]) {
        Endpoint::handle_datagram(self, now, local, from, bytes);
    }
    fn handle_timeout(&mut self, now: Micros) {
        Endpoint::handle_timeout(self, now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Endpoint::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Micros> {
        Endpoint::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<EndpointEvent> {
        Endpoint::poll_event(self)
    }
}

/// Where and how a [`Driver`] binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// The local address to bind both ports on.
    pub ip: IpAddr,
    /// The control port N (the data port is N+1). 0 picks a free
    /// consecutive pair.
    pub control_port: u16,
    /// Attempts at finding a free consecutive pair when `control_port` is 0.
    pub bind_attempts: u32,
}

impl DriverConfig {
    /// 127.0.0.1 with a free port pair (tests and local tools).
    pub fn loopback() -> Self {
        DriverConfig {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            control_port: 0,
            bind_attempts: 64,
        }
    }

    /// Every IPv4 interface on the given control port (0: any free pair).
    pub fn any(control_port: u16) -> Self {
        DriverConfig {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            control_port,
            ..DriverConfig::loopback()
        }
    }
}

/// Why a driver could not start, or what became of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Binding the port pair failed.
    #[error("cannot bind the port pair {ip}:{control_port}/{}", control_port.wrapping_add(1))]
    Bind {
        /// The address asked for.
        ip: IpAddr,
        /// The control port asked for (0: any).
        control_port: u16,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No consecutive free pair was found.
    #[error("no free consecutive port pair on {ip} after {attempts} attempts")]
    NoFreePair {
        /// The address asked for.
        ip: IpAddr,
        /// Attempts made.
        attempts: u32,
    },
    /// The control port is 65535: there is no N+1.
    #[error("control port {0} leaves no room for the data port")]
    NoDataPort(u16),
    /// The driver task has stopped (shut down, or panicked).
    #[error("the driver task has stopped")]
    Closed,
}

/// Binds the control socket on `ip:port` and the data socket on
/// `ip:port+1`; with port 0, tries free ports until a consecutive pair is
/// found.
pub fn bind_pair(
    ip: IpAddr,
    control_port: u16,
    attempts: u32,
) -> Result<(std::net::UdpSocket, std::net::UdpSocket), DriverError> {
    let bind = |port: u16| std::net::UdpSocket::bind(SocketAddr::new(ip, port));
    let err = |source| DriverError::Bind {
        ip,
        control_port,
        source,
    };
    if control_port != 0 {
        let data_port = control_port
            .checked_add(1)
            .ok_or(DriverError::NoDataPort(control_port))?;
        let control = bind(control_port).map_err(err)?;
        let data = bind(data_port).map_err(err)?;
        return Ok((control, data));
    }
    for _ in 0..attempts.max(1) {
        let control = bind(0).map_err(err)?;
        let port = control.local_addr().map_err(err)?.port();
        let Some(data_port) = port.checked_add(1) else {
            continue;
        };
        // Taken by someone else: drop this control socket and try again.
        if let Ok(data) = bind(data_port) {
            return Ok((control, data));
        }
    }
    Err(DriverError::NoFreePair { ip, attempts })
}

/// A clock on tokio's time, which stops and jumps under
/// `tokio::time::pause`, so timer tests run instantly. Counts from the
/// moment it was created.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is tokio's now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Micros {
        Micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

type Call<P> = Box<dyn FnOnce(&mut P, Micros) + Send>;

enum Command<P> {
    Call(Call<P>),
    Shutdown,
}

/// A running driver: the handle through which the application sends
/// commands. Events arrive on the receiver returned by [`Driver::spawn`].
///
/// Dropping every `Driver` and [`DriverHandle`] stops the task (after it
/// sends what the protocol has queued).
pub struct Driver<P: Protocol> {
    handle: DriverHandle<P>,
    task: JoinHandle<P>,
}

/// A cloneable sender of commands to a [`Driver`]'s task.
pub struct DriverHandle<P: Protocol> {
    tx: mpsc::UnboundedSender<Command<P>>,
    control: SocketAddr,
    data: SocketAddr,
}

impl<P: Protocol> Clone for DriverHandle<P> {
    fn clone(&self) -> Self {
        DriverHandle {
            tx: self.tx.clone(),
            control: self.control,
            data: self.data,
        }
    }
}

impl<P: Protocol> DriverHandle<P> {
    /// The bound control address (port N).
    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    /// The bound data address (port N+1).
    pub fn data_addr(&self) -> SocketAddr {
        self.data
    }

    /// Runs `f` on the protocol object inside the task, with the current
    /// time, and returns its result. The outputs it queues are drained right
    /// after.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, Micros) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.submit(move |p, now| {
            let _ = tx.send(f(p, now));
        })?;
        rx.await.map_err(|_| DriverError::Closed)
    }

    /// Like [`DriverHandle::call`] without waiting for the result.
    pub fn submit(
        &self,
        f: impl FnOnce(&mut P, Micros) + Send + 'static,
    ) -> Result<(), DriverError> {
        self.tx
            .send(Command::Call(Box::new(f)))
            .map_err(|_| DriverError::Closed)
    }
}

impl<P: Protocol> Driver<P> {
    /// Binds the port pair, builds the protocol object with the clock's
    /// current time, and spawns the task on the current tokio runtime.
    pub async fn spawn<C: Clock + 'static>(
        config: DriverConfig,
        clock: C,
        make: impl FnOnce(Micros) -> P,
    ) -> Result<(Driver<P>, mpsc::UnboundedReceiver<P::Event>), DriverError> {
        let (control, data) = bind_pair(config.ip, config.control_port, config.bind_attempts)?;
        let bind_err = |source| DriverError::Bind {
            ip: config.ip,
            control_port: config.control_port,
            source,
        };
        let tokio_socket = |s: std::net::UdpSocket| {
            s.set_nonblocking(true)?;
            UdpSocket::from_std(s)
        };
        let control = tokio_socket(control).map_err(bind_err)?;
        let data = tokio_socket(data).map_err(bind_err)?;
        let control_addr = control.local_addr().map_err(bind_err)?;
        let data_addr = data.local_addr().map_err(bind_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let protocol = make(clock.now());
        let task = tokio::spawn(run(protocol, clock, control, data, rx, events_tx));
        Ok((
            Driver {
                handle: DriverHandle {
                    tx,
                    control: control_addr,
                    data: data_addr,
                },
                task,
            },
            events_rx,
        ))
    }

    /// A cloneable command sender.
    pub fn handle(&self) -> DriverHandle<P> {
        self.handle.clone()
    }

    /// The bound control address (port N).
    pub fn control_addr(&self) -> SocketAddr {
        self.handle.control
    }

    /// The bound data address (port N+1).
    pub fn data_addr(&self) -> SocketAddr {
        self.handle.data
    }

    /// See [`DriverHandle::call`].
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, Micros) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.handle.call(f).await
    }

    /// See [`DriverHandle::submit`].
    pub fn submit(
        &self,
        f: impl FnOnce(&mut P, Micros) + Send + 'static,
    ) -> Result<(), DriverError> {
        self.handle.submit(f)
    }

    /// Stops the task after it has sent everything queued before this call,
    /// and gives the protocol object back (for a final look at its state).
    /// Closes the sockets. Call [`Endpoint::close`] first to say `BY`.
    pub async fn shutdown(self) -> Result<P, DriverError> {
        let _ = self.handle.tx.send(Command::Shutdown);
        self.task.await.map_err(|_| DriverError::Closed)
    }
}

/// Far enough to mean "no deadline", near enough to be representable.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Maps protocol time onto tokio's timer clock.
struct TimeBase<C> {
    clock: C,
    origin_micros: Micros,
    origin_instant: tokio::time::Instant,
    last: Micros,
}

impl<C: Clock> TimeBase<C> {
    fn new(clock: C) -> Self {
        let origin_instant = tokio::time::Instant::now();
        let origin_micros = clock.now();
        TimeBase {
            clock,
            origin_micros,
            origin_instant,
            last: origin_micros,
        }
    }

    /// The current time, never earlier than a previous answer.
    fn now(&mut self) -> Micros {
        self.last = self.last.max(self.clock.now());
        self.last
    }

    /// Now, but at least `deadline` (so a timer never fires "early" because
    /// the two clocks disagree by a few microseconds).
    fn now_at_least(&mut self, deadline: Micros) -> Micros {
        self.last = self.now().max(deadline);
        self.last
    }

    fn instant(&self, t: Micros) -> tokio::time::Instant {
        // Capped so that "never" cannot overflow the instant type.
        let d = t
            .saturating_duration_since(self.origin_micros)
            .min(FAR_FUTURE);
        self.origin_instant + d
    }
}

async fn send(control: &UdpSocket, data: &UdpSocket, t: Transmit) {
    let socket = match t.from {
        Port::Control => control,
        Port::Data => data,
    };
    if let Err(e) = socket.send_to(&t.payload, t.to).await {
        tracing::debug!(to = %t.to, port = ?t.from, error = %e, "send failed");
    }
}

async fn run<P: Protocol, C: Clock>(
    mut protocol: P,
    clock: C,
    control: UdpSocket,
    data: UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command<P>>,
    events: mpsc::UnboundedSender<P::Event>,
) -> P {
    let mut time = TimeBase::new(clock);
    // One buffer per socket: both receive futures live in the same select.
    let mut control_buf = vec![0u8; 65_536];
    let mut data_buf = vec![0u8; 65_536];
    // One timer for the whole life of the task, moved only when the
    // protocol's deadline moves: re-registering a fresh timer on every
    // pass through the loop costs every packet a trip through tokio's
    // timer wheel.
    let sleep = tokio::time::sleep_until(time.instant(Micros::MAX));
    tokio::pin!(sleep);
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        while let Some(t) = protocol.poll_transmit() {
            send(&control, &data, t).await;
        }
        let mut delivered = false;
        while let Some(e) = protocol.poll_event() {
            // A gone receiver only means nobody listens any more.
            let _ = events.send(e);
            delivered = true;
        }
        if delivered {
            // Let a reader on this runtime take the events now, before this
            // task goes back to polling its sockets and timer.
            tokio::task::yield_now().await;
        }
        let deadline = protocol.poll_timeout();
        if let Some(d) = deadline {
            let wake = time.instant(d);
            if armed != Some(wake) {
                sleep.as_mut().reset(wake);
                armed = Some(wake);
            }
        }
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(Command::Call(f)) => {
                    let now = time.now();
                    f(&mut protocol, now);
                }
                Some(Command::Shutdown) | None => break,
            },
            r = control.recv_from(&mut control_buf) => match r {
                Ok((n, from)) => {
                    let now = time.now();
                    protocol.handle_datagram(now, Port::Control, from, &control_buf[..n]);
                }
                Err(e) => tracing::debug!(error = %e, "control port receive failed"),
            },
            r = data.recv_from(&mut data_buf) => match r {
                Ok((n, from)) => {
                    let now = time.now();
                    protocol.handle_datagram(now, Port::Data, from, &data_buf[..n]);
                }
                Err(e) => tracing::debug!(error = %e, "data port receive failed"),
            },
            () = &mut sleep, if deadline.is_some() => {
                armed = None;
                let now = time.now_at_least(deadline.unwrap_or_default());
                protocol.handle_timeout(now);
            }
        }
    }
    // Whatever the last commands queued (a BY from `close`) still goes out.
    while let Some(t) = protocol.poll_transmit() {
        send(&control, &data, t).await;
    }
    while let Some(e) = protocol.poll_event() {
        let _ = events.send(e);
    }
    protocol
}

#[cfg(test)]
mod tests;
