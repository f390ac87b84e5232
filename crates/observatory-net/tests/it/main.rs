//! Integration tests of `observatory-net`: the swarm over real loopback sockets (`net`),
//! and the mesh's settings from the configuration (`settings`).

mod net;
mod settings;
