//! chainsocks core: everything that can be written without sockets or `unsafe`.
pub mod proto;
