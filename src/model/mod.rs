//! Networks built from ops: the NSN / NDN / 3-D U-Net family.
//!
//! One encoder–decoder ([`Layout`]) covers all three; [`NetConfig::preset`]
//! gives the published settings.

pub mod config;

pub use config::{Arch, Cbr, Dec, Layout, NetConfig, TensorSpec};
pub mod backend;
pub mod net;
pub mod st;

pub use backend::{Backend, LossSpec};
pub use net::{Net, Tape};
