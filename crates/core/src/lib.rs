//! chainsocks core: everything that can be written without sockets or `unsafe`.
//!
//! - [`proto`]: sans-io SOCKS4/4a, SOCKS5, HTTP CONNECT encoders and decoders.
//! - [`config`]: the TOML model, proxy URLs, config search order.
//! - [`chain`]: routing decisions, chain modes, proxy health.
//! - [`dial`]: the chain handshake over any [`dial::Transport`].
//! - [`dns`]: sans-io DNS queries and answers for the launch's fake-DNS responder.
//! - [`fakedns`]: the lock-free fake-DNS table shared by a launch, and the fake ranges.
//! - [`rules`]: destination patterns, localnet, dnat.
//! - [`pxconf`]: proxychains-ng's `proxychains.conf` read into a [`config::Config`], and its TOML.
//! - [`error`]: the one error type and its errno / EAI mapping.
//! - [`shm`]: the layout of the state a launch shares between its processes.
//!
//! This crate exports no C symbols: it is linked into both the launcher and the preloaded
//! library, and must never call a function the library hooks (connect, getaddrinfo…).

pub mod chain;
pub mod config;
pub mod dial;
pub mod dns;
pub mod error;
pub mod fakedns;
pub mod proto;
pub mod pxconf;
pub mod rules;
pub mod shm;

pub use error::Error;
