//! The libp2p side of the mesh: transport, behaviours and the wire codec of anti-entropy.
//!
//! This module only assembles a [`Swarm`]; it keeps no mesh state and starts no tasks. The
//! driver that owns the swarm calls [`build_swarm`], then `swarm.listen_on(..)` and
//! `swarm.dial(..)`, and polls the swarm (`swarm.select_next_some()`) in its own loop, feeding
//! [`BehaviourEvent`]s to the anti-entropy state machine and sending its requests with
//! `swarm.behaviour_mut().sync.send_request(..)`.
//!
//! The transport is TCP, then (with a pre-shared key) the `pnet` private-network layer, so a
//! peer without the key cannot even start a handshake, then noise and yamux. DNS multiaddrs
//! (`/dns4/host/tcp/port`) are resolved with the system resolver.
//!
//! Everything a remote peer can make us hold is bounded: connections (pending and established,
//! in total and per peer) by [`libp2p::connection_limits`], request bytes by
//! [`NetConfig::message_bytes_max`], response bytes by [`RESPONSE_BYTES_MAX`], the time a
//! request may take by [`NetConfig::request_timeout`], and concurrent request streams per
//! connection by request-response's own limit (100).

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, Transport, allow_block_list, connection_limits,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    identify,
    identity::Keypair,
    mdns, noise,
    pnet::{PnetConfig, PreSharedKey},
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};

/// Protocol name of anti-entropy messages.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/observatory/sync/1");

/// The `protocol_version` we announce through identify. Identify itself always runs on
/// `/ipfs/id/1.0.0`; this string tells observers apart from other libp2p software.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/observatory/id/1";

/// Largest response we send or accept, in bytes. Responses are acknowledgements, not data:
/// the data of anti-entropy travels in requests, in both directions.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Established connections allowed to one peer. Two rather than one, so that when two peers
/// dial each other at the same moment neither dial is refused; the surplus connection closes
/// once idle.
pub const ESTABLISHED_PER_PEER_MAX: u32 = 2;

/// What [`build_swarm`] needs to know beyond our identity.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The private-network key; `Some` makes every connection, in and out, go through `pnet`.
    pub psk: Option<PreSharedKey>,
    /// Peers allowed to connect, in either direction; empty means any peer may connect.
    pub allow_peers: Vec<PeerId>,
    /// Whether to discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Largest request accepted or sent, in bytes.
    pub message_bytes_max: usize,
    /// How long a request may take, from sending it to receiving its response.
    pub request_timeout: Duration,
    /// How long a connection with no open stream is kept before it is closed.
    pub idle_connection_timeout: Duration,
    /// Established connections in total, incoming and outgoing together.
    pub established_max: u32,
    /// Connections still being set up, counted separately for incoming and outgoing.
    pub pending_max: u32,
}

/// The behaviours of an observer peer, combined; the derive also generates [`BehaviourEvent`].
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps on pending and established connections (see [`ESTABLISHED_PER_PEER_MAX`]).
    pub limits: connection_limits::Behaviour,
    /// Denies connections to and from peers outside [`NetConfig::allow_peers`]; disabled when
    /// that list is empty.
    pub allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Exchanges listen addresses, agent versions and protocols with connected peers.
    pub identify: identify::Behaviour,
    /// Local-network discovery; disabled unless [`NetConfig::mdns`].
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Anti-entropy requests and their responses on [`SYNC_PROTOCOL`].
    pub sync: request_response::Behaviour<WireCodec>,
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Most inner behaviours have no `Debug`; show what tells one swarm from another.
        f.debug_struct("Behaviour")
            .field("allow_peers", &self.allow.as_ref().map(|allow| allow.allowed_peers().len()))
            .field("mdns", &self.mdns.is_enabled())
            .finish_non_exhaustive()
    }
}

/// Our request-response codec: both requests and responses are raw bytes that run to the end
/// of their stream (the caller encodes and decodes CBOR).
///
/// A request is at most `message_bytes_max` bytes and a response at most
/// [`RESPONSE_BYTES_MAX`]; reading or writing more is an [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`] saying "message larger than N bytes", and the reader stops
/// after one byte past the limit, so an oversized message costs us no more than the limit.
///
/// Neither a request nor a response is ever empty (the caller's CBOR never is), and reading
/// an empty one is an error of kind [`io::ErrorKind::UnexpectedEof`]. The end of a stream is
/// all the framing there is, and an empty stream is what a failure leaves behind:
/// request-response closes the stream without writing when the responder drops the response
/// channel, and yamux reports a reset stream (a sender that gave up before writing) as a clean
/// end of stream. Neither may reach the other side as an empty message. A stream reset in the
/// middle of a message reads as a truncated message, which the CBOR decoder rejects.
#[derive(Debug, Clone)]
pub struct WireCodec {
    message_bytes_max: usize,
}

impl WireCodec {
    /// A codec that accepts and sends requests of at most `message_bytes_max` bytes.
    pub fn new(message_bytes_max: usize) -> Self {
        Self { message_bytes_max }
    }

    /// The largest request, in bytes, this codec reads or writes.
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }
}

fn message_too_large(bytes_max: usize) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("message larger than {bytes_max} bytes"))
}

/// Reads a whole stream of at most `bytes_max` bytes holding one non-empty `what`.
async fn read_bounded<T>(io: &mut T, bytes_max: usize, what: &str) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let take_max = u64::try_from(bytes_max).unwrap_or(u64::MAX).saturating_add(1);
    io.take(take_max).read_to_end(&mut bytes).await?;
    if bytes.len() > bytes_max {
        return Err(message_too_large(bytes_max));
    }
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended without a {what} (the peer gave up or sent nothing)"),
        ));
    }
    Ok(bytes)
}

/// Writes one `what`, refusing it if it is empty or larger than `bytes_max` bytes.
async fn write_bounded<T>(io: &mut T, bytes: &[u8], bytes_max: usize, what: &str) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if bytes.len() > bytes_max {
        return Err(message_too_large(bytes_max));
    }
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("an empty {what} cannot be sent (the peer would read it as no {what})"),
        ));
    }
    io.write_all(bytes).await
}

impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _protocol: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let request = read_bounded(io, self.message_bytes_max, "request").await;
        // request-response drops a request that fails here without telling the behaviour's
        // user (libp2p 0.57 only logs it at debug), so this log is all an operator gets when,
        // say, peers disagree on the limit.
        if let Err(error) = &request {
            tracing::warn!(%error, "refused an incoming anti-entropy request");
        }
        request
    }

    async fn read_response<T>(&mut self, _protocol: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, RESPONSE_BYTES_MAX, "response").await
    }

    async fn write_request<T>(
        &mut self,
        _protocol: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &request, self.message_bytes_max, "request").await
    }

    async fn write_response<T>(
        &mut self,
        _protocol: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &response, RESPONSE_BYTES_MAX, "response").await
    }
}

/// Everything that can go wrong in [`read_psk_file`] and [`build_swarm`].
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The pre-shared key file could not be read at all (missing, no permission, not UTF-8...).
    #[error("cannot read the pre-shared key file {}: {source}", path.display())]
    PskFileRead {
        /// The file we tried to read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The pre-shared key file was read but does not hold a swarm key.
    #[error(
        "the pre-shared key file {} is not a swarm key file \
         (\"/key/swarm/psk/1.0.0/\", \"/base16/\", then 64 hex digits, one per line): {problem}",
        path.display()
    )]
    PskFileInvalid {
        /// The file we read.
        path: PathBuf,
        /// What is wrong with its contents.
        problem: PskFileProblem,
    },
    /// Noise could not derive its static key from our identity keypair.
    #[error("cannot set up noise encryption with our identity key: {0}")]
    Noise(#[source] noise::Error),
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read, so `/dns4/`
    /// addresses could not be dialled.
    #[error("cannot read the system DNS resolver configuration: {0}")]
    Dns(#[source] io::Error),
    /// mDNS was enabled but could not start (for example no usable network interface watcher).
    #[error("cannot start mDNS discovery: {0}")]
    Mdns(#[source] io::Error),
}

/// What is wrong inside a pre-shared key file; see [`NetError::PskFileInvalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskFileProblem {
    /// The file has fewer than three lines.
    #[error("it has {lines} line(s), expected 3")]
    TooFewLines {
        /// Non-blank lines found.
        lines: usize,
    },
    /// The first line is not `/key/swarm/psk/1.0.0/`.
    #[error("the first line is {found:?}, expected \"/key/swarm/psk/1.0.0/\"")]
    WrongHeader {
        /// The first line as found (trimmed, shortened).
        found: String,
    },
    /// The second line is not `/base16/`, the only encoding we read.
    #[error("the second line is {found:?}, expected \"/base16/\" (the only encoding supported)")]
    WrongEncoding {
        /// The second line as found (trimmed, shortened).
        found: String,
    },
    /// The key line does not have 64 characters.
    #[error("the key has {digits} characters, expected 64 hex digits (32 bytes)")]
    WrongKeyLength {
        /// Characters on the key line.
        digits: usize,
    },
    /// The key line has a character that is not a hex digit.
    #[error("the key has {found:?} at position {position}, which is not a hex digit")]
    NotHex {
        /// The offending character.
        found: char,
        /// Its position on the key line, from 1.
        position: usize,
    },
    /// Something other than blank lines follows the key.
    #[error("line {line} has content after the key")]
    TrailingContent {
        /// The line number, from 1.
        line: usize,
    },
}

/// Shortens a line for an error message, so that a binary file does not flood the log.
fn excerpt(line: &str) -> String {
    const CHARS_MAX: usize = 40;
    let mut excerpt: String = line.chars().take(CHARS_MAX).collect();
    if line.chars().count() > CHARS_MAX {
        excerpt.push('…');
    }
    excerpt
}

/// Parses the contents of a swarm key file. Whitespace around each line and blank lines at
/// the end are tolerated, as editors add them.
fn parse_psk(text: &str) -> Result<PreSharedKey, PskFileProblem> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let lines_used = lines.iter().rposition(|line| !line.is_empty()).map_or(0, |last| last + 1);
    let [header, encoding, key, rest @ ..] = &lines[..lines_used] else {
        return Err(PskFileProblem::TooFewLines { lines: lines_used });
    };
    if *header != "/key/swarm/psk/1.0.0/" {
        return Err(PskFileProblem::WrongHeader { found: excerpt(header) });
    }
    if *encoding != "/base16/" {
        return Err(PskFileProblem::WrongEncoding { found: excerpt(encoding) });
    }
    // `rest` ends with a non-blank line, so it is empty or has content somewhere.
    if let Some(index) = rest.iter().position(|line| !line.is_empty()) {
        return Err(PskFileProblem::TrailingContent { line: index + 4 });
    }
    if let Some((index, found)) = key.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(PskFileProblem::NotHex { found, position: index + 1 });
    }
    // All characters are ASCII hex digits now, so bytes and characters coincide.
    let mut bytes = [0u8; 32];
    if key.len() != bytes.len() * 2 {
        return Err(PskFileProblem::WrongKeyLength { digits: key.len() });
    }
    for (byte, pair) in bytes.iter_mut().zip(key.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).expect("ASCII hex digits are UTF-8");
        *byte = u8::from_str_radix(pair, 16).expect("two hex digits are a byte");
    }
    Ok(PreSharedKey::new(bytes))
}

/// Reads a pre-shared key file in the usual swarm-key text format
/// (`/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits, one per line, as written by
/// [`PreSharedKey::to_key_file`] and by go-libp2p tools). Errors name the file and say what is
/// wrong with it.
pub fn read_psk_file(path: &Path) -> Result<PreSharedKey, NetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| NetError::PskFileRead { path: path.to_owned(), source })?;
    parse_psk(&text).map_err(|problem| NetError::PskFileInvalid { path: path.to_owned(), problem })
}

/// TCP, then pnet if we have a key, then noise and yamux. The DNS layer goes around all of it
/// in [`build_swarm`], so that names are resolved before TCP sees the address.
fn authenticated_transport(
    keypair: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetError> {
    let noise = noise::Config::new(keypair).map_err(NetError::Noise)?;
    let yamux = yamux::Config::default();
    let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true));
    // The two branches have different types until boxed; `with_tcp` of the swarm builder
    // cannot insert pnet, hence the hand-made stack.
    let transport = match psk {
        Some(psk) => {
            let pnet = PnetConfig::new(psk);
            tcp.and_then(move |socket, _endpoint| pnet.handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux)
                .boxed()
        }
        None => tcp.upgrade(Version::V1Lazy).authenticate(noise).multiplex(yamux).boxed(),
    };
    Ok(transport)
}

fn behaviour(keypair: &Keypair, config: &NetConfig) -> Result<Behaviour, NetError> {
    let local_peer_id = keypair.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.established_max))
        .with_max_established_per_peer(Some(ESTABLISHED_PER_PEER_MAX))
        .with_max_pending_incoming(Some(config.pending_max))
        .with_max_pending_outgoing(Some(config.pending_max));
    let allow = (!config.allow_peers.is_empty()).then(|| {
        let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
        for peer in &config.allow_peers {
            allow.allow_peer(*peer);
        }
        allow
    });
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
            .with_agent_version(format!("observatory/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local_peer_id).map_err(NetError::Mdns)?)
    } else {
        None
    };
    let sync = request_response::Behaviour::with_codec(
        WireCodec::new(config.message_bytes_max),
        [(SYNC_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        allow: Toggle::from(allow),
        identify,
        mdns: Toggle::from(mdns),
        sync,
    })
}

/// Builds the swarm: TCP (nodelay), then pnet (only if [`NetConfig::psk`] is set), then noise
/// and yamux, with DNS resolution so `/dns4/host/tcp/port` multiaddrs dial, on tokio.
///
/// Call it within a tokio runtime (mDNS starts on it) and poll the swarm on one. Does not
/// listen or dial; the caller calls `swarm.listen_on(..)` and `swarm.dial(..)`.
pub fn build_swarm(keypair: Keypair, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let transport = authenticated_transport(&keypair, config.psk)?;
    let behaviour = behaviour(&keypair, config)?;
    let Ok(builder) =
        SwarmBuilder::with_existing_identity(keypair).with_tokio().with_other_transport(|_| transport);
    let builder = builder.with_dns().map_err(NetError::Dns)?;
    let Ok(builder) = builder.with_behaviour(|_| behaviour);
    let swarm = builder
        .with_swarm_config(|swarm_config| {
            swarm_config.with_idle_connection_timeout(config.idle_connection_timeout)
        })
        .build();
    Ok(swarm)
}
