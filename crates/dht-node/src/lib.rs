#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod devnet;
pub mod node;
pub mod transport;
