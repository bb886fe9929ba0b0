//! Session-state scenarios: replicas converging over an impaired network,
//! and the `jam session` command's output.

mod session_cli;
mod session_convergence;
