//! Agent files (`.agent`): a personal model sealed like a capture.
//!
//! The payload is `metadata length (u32 BE) | metadata | model bytes`. The
//! model bytes are opaque here (`jam-predict` defines them); the metadata
//! says whose agent it is, what kind of model, its version and what it was
//! trained on. Share and revoke work on agents exactly as on any sealed
//! file ([`crate::seal::share`], [`crate::seal::revoke`]).
//!
//! Metadata encoding: schema (u16 BE, 1), owner public key (32 bytes), owner
//! name, kind, version (LEB128), created (µs since the Unix epoch, zigzag),
//! captures, events, duration in µs, participant count and ids, description.

use std::io::{self, Read, Write};

use jam_core::PeerId;

use crate::codec::{Dec, Enc};
use crate::error::CaptureError;
use crate::format::Kind;
use crate::keys::{Identity, Recipient};
use crate::seal::{OpenReader, Opener, SealWriter};

/// Largest metadata block accepted.
pub const MAX_META_LEN: usize = 1 << 20;
const META_SCHEMA: u16 = 1;

/// What an agent was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrainingSummary {
    /// Captures used.
    pub captures: u32,
    /// MIDI events seen.
    pub events: u64,
    /// Total session time, in microseconds.
    pub duration_micros: u64,
    /// Whose playing was in the data.
    pub participants: Vec<PeerId>,
    /// Free text.
    pub description: String,
}

/// Who owns an agent, what it is, and what it learned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMeta {
    /// The owner's public key.
    pub owner: Recipient,
    /// The owner's display name.
    pub owner_name: String,
    /// Model kind as `jam-predict` names it (for example `markov-v1`).
    pub kind: String,
    /// Version of this agent (the owner's numbering; not the sealed file's
    /// generation).
    pub version: u64,
    /// Creation time, microseconds since the Unix epoch.
    pub created_unix_micros: i64,
    /// The training data.
    pub training: TrainingSummary,
}

impl AgentMeta {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u16(META_SCHEMA)
            .raw(&self.owner.to_bytes())
            .str(&self.owner_name)
            .str(&self.kind)
            .var(self.version)
            .svar(self.created_unix_micros)
            .var(u64::from(self.training.captures))
            .var(self.training.events)
            .var(self.training.duration_micros)
            .var(self.training.participants.len() as u64);
        for p in &self.training.participants {
            e.raw(&p.0);
        }
        e.str(&self.training.description);
        e.buf
    }

    /// Decodes a metadata block.
    pub fn decode(b: &[u8]) -> Result<AgentMeta, CaptureError> {
        let bad = |e: crate::codec::CodecError| CaptureError::AgentMeta(e.to_string());
        let mut d = Dec::new(b);
        let schema = d.u16().map_err(bad)?;
        if schema != META_SCHEMA {
            return Err(CaptureError::AgentMeta(format!(
                "unknown metadata schema {schema}"
            )));
        }
        let owner = Recipient::from_bytes(d.array().map_err(bad)?);
        let owner_name = d.str().map_err(bad)?.to_string();
        let kind = d.str().map_err(bad)?.to_string();
        let version = d.var().map_err(bad)?;
        let created_unix_micros = d.svar().map_err(bad)?;
        let captures = u32::try_from(d.var().map_err(bad)?)
            .map_err(|_| CaptureError::AgentMeta("capture count too large".into()))?;
        let events = d.var().map_err(bad)?;
        let duration_micros = d.var().map_err(bad)?;
        let n = d.var().map_err(bad)?;
        if n > (d.rest.len() / 16) as u64 {
            return Err(CaptureError::AgentMeta(
                "participant list runs past the metadata".into(),
            ));
        }
        let mut participants = Vec::new();
        for _ in 0..n {
            participants.push(PeerId(d.array().map_err(bad)?));
        }
        let description = d.str().map_err(bad)?.to_string();
        if !d.is_empty() {
            return Err(CaptureError::AgentMeta(format!(
                "{} bytes after the last field",
                d.rest.len()
            )));
        }
        Ok(AgentMeta {
            owner,
            owner_name,
            kind,
            version,
            created_unix_micros,
            training: TrainingSummary {
                captures,
                events,
                duration_micros,
                participants,
                description,
            },
        })
    }
}

/// Seals an agent for `recipients` (the owner should be one of them):
/// metadata, then `model` streamed in constant memory.
pub fn write_agent<W: Write, M: Read, G: rand_core::CryptoRng + ?Sized>(
    out: W,
    meta: &AgentMeta,
    model: &mut M,
    recipients: &[Recipient],
    rng: &mut G,
) -> Result<W, CaptureError> {
    let m = meta.encode();
    let mut w = SealWriter::new(out, Kind::Agent, recipients, rng)?;
    w.write_all(&(m.len() as u32).to_be_bytes())?;
    w.write_all(&m)?;
    io::copy(model, &mut w)?;
    Ok(w.finish()?)
}

fn io_to_capture(e: io::Error) -> CaptureError {
    match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<crate::OpenError>())
    {
        Some(_) => {
            let inner = e.into_inner().expect("checked above");
            CaptureError::Open(*inner.downcast::<crate::OpenError>().expect("checked above"))
        }
        None => CaptureError::Io(e),
    }
}

/// An opened agent: its metadata and a reader of the model bytes (which
/// fails, rather than ending early, on a truncated or modified file).
pub struct OpenedAgent<R: Read> {
    /// The metadata.
    pub meta: AgentMeta,
    /// The model bytes.
    pub model: OpenReader<R>,
}

impl<R: Read> std::fmt::Debug for OpenedAgent<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedAgent")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl<R: Read> OpenedAgent<R> {
    /// Reads the whole model (checking every chunk).
    pub fn read_model(mut self) -> Result<Vec<u8>, CaptureError> {
        let mut v = Vec::new();
        self.model.read_to_end(&mut v).map_err(io_to_capture)?;
        Ok(v)
    }

    /// Reads the model to its end without keeping it; returns its length.
    pub fn verify(mut self) -> Result<u64, CaptureError> {
        io::copy(&mut self.model, &mut io::sink()).map_err(io_to_capture)
    }
}

/// Opens an agent with whichever of `identities` is a recipient.
pub fn open_agent<R: Read>(
    input: R,
    identities: &[Identity],
) -> Result<OpenedAgent<R>, CaptureError> {
    let mut model = Opener::new_of_kind(input, identities, Kind::Agent)?.into_reader();
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            CaptureError::AgentMeta("the agent ends inside its metadata".into())
        }
        _ => io_to_capture(e),
    };
    let mut len = [0u8; 4];
    model.read_exact(&mut len).map_err(short)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_META_LEN {
        return Err(CaptureError::AgentMeta(format!(
            "metadata of {len} bytes (at most {MAX_META_LEN})"
        )));
    }
    let mut m = vec![0u8; len];
    model.read_exact(&mut m).map_err(short)?;
    Ok(OpenedAgent {
        meta: AgentMeta::decode(&m)?,
        model,
    })
}
