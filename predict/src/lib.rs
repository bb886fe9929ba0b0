//! Timing, quantization and prediction for jam.togthr.
//!
//! placeholder
pub mod coherent;
pub mod features;
pub mod interval;
pub mod jitter_buffer;
pub mod late_policy;
pub mod quantizer;
pub mod stuck_guard;

pub use features::{Note, NoteSeq, Role};
pub use late_policy::LatencyMode;
