//! chainsocks core: everything that can be written without sockets or `unsafe`.
//!
//! - [`proto`]: sans-io SOCKS4/4a, SOCKS5, HTTP CONNECT encoders and decoders.
//! - [`config`]: the TOML model, proxy URLs, config search order.
//! - [`chain`]: routing decisions, chain modes, proxy health.
//! - [`dial`]: the chain handshake over any [`dial::Transport`].
//! - [`connect`]: what a connect does (decision + dial on an fd), for the preload and the
//!   launcher's supervisor alike, behind [`connect::Host`].
//! - [`sys`]: the raw syscalls the dialer makes (never through a hooked libc symbol).
//! - [`report`]: the egress report's JSON lines.
//! - [`udp`]: UDP through a SOCKS5 association (route, setup, datagram header).
//! - [`dns`]: sans-io DNS queries and answers for the launch's fake-DNS responder.
//! - [`fakedns`]: the lock-free fake-DNS table shared by a launch, and the fake ranges.
//! - [`rules`]: destination patterns, localnet, dnat.
//! - [`hosts`]: /etc/hosts, parsed (local names answered without DNS).
//! - [`pxconf`]: proxychains-ng's `proxychains.conf` read into a [`config::Config`], and its TOML.
//! - [`error`]: the one error type and its errno / EAI mapping.
//! - [`shm`]: the layout of the state a launch shares between its processes.
//!
//! This crate exports no C symbols: it is linked into both the launcher and the preloaded
//! library, and must never call a function the library hooks (connect, getaddrinfo…).

pub mod chain;
pub mod config;
pub mod connect;
pub mod dial;
pub mod dns;
pub mod error;
pub mod fakedns;
pub mod hosts;
pub mod proto;
pub mod pxconf;
pub mod report;
pub mod rules;
pub mod shm;
pub mod sys;
pub mod udp;

pub use error::Error;
