//! `observatory`: the peer and its command-line tools.
//!
//! Subcommands: `peer` runs an observer peer; `send`, `graph`, `top`, `status`, `peers`
//! and `objectives` talk to a running peer over HTTP; `config` checks and prints
//! configuration; `objectives check` checks objectives files; `sim` runs a failure
//! simulation.

mod client;
mod demo;
mod peer;
mod sim_cmd;
mod top;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use observatory_config::{Config, Overrides};

/// Observatory watches a distributed system from above: which service talks to which,
/// how often, how many calls fail and how long they take.
///
/// Services report events (one per call or message) to a peer; the peer keeps the flow
/// graph and answers for any window of it. Start a peer with `observatory peer`, send it events with
/// `observatory send events.ndjson` (or any HTTP client), and look at the graph with
/// `observatory graph`.
#[derive(Debug, Parser)]
#[command(name = "observatory", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an observer peer: HTTP API for events and queries, data kept in sled.
    ///
    /// Prints one JSON line on stdout with the peer id and the HTTP address it listens
    /// on, then logs on stderr (set OBSERVATORY_LOG=debug for more). Stops cleanly on
    /// Ctrl-C or SIGTERM, flushing everything to disk.
    Peer {
        /// YAML config file; see `observatory config default` for every key.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data dir (overrides store.path). Default: ./data
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// HTTP listen address as IP:PORT (overrides http.addr). Default: 127.0.0.1:7070; port 0 picks one.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Multiaddr to listen on for peers (repeatable; replaces mesh.listen).
        /// Default: /ip4/0.0.0.0/tcp/7000; port 0 picks one.
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Multiaddr of a peer to join (repeatable; replaces mesh.bootstrap), e.g.
        /// /ip4/10.0.0.2/tcp/7000 or /dns4/obs-1/tcp/7000.
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// Do not look for peers on the local network with mDNS (sets mesh.mdns: false).
        #[arg(long)]
        no_mdns: bool,
        /// Address of the OTLP/HTTP listener as IP:PORT (overrides otlp.addr).
        /// Default: 127.0.0.1:4318; port 0 picks one.
        #[arg(long, value_name = "ADDR")]
        otlp: Option<SocketAddr>,
        /// Address of the OTLP/gRPC listener as IP:PORT (overrides otlp.grpc_addr).
        /// Default: 127.0.0.1:4317; port 0 picks one.
        #[arg(long, value_name = "ADDR")]
        otlp_grpc: Option<SocketAddr>,
    },
    /// Send events from a file of NDJSON (one event per line) or a JSON array.
    ///
    /// An event looks like {"from":"checkout","to":"payments","ts":"2026-11-22T10:00:00Z",
    /// "latency_ms":12.5,"error":false,"bytes":512,"count":1}; only from and to are
    /// required. Prints the peer's answer; exits with 1 if any event was rejected.
    Send {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// File to send, or - for standard input.
        #[arg(default_value = "-", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the flow graph of a time window.
    Graph {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// Length of the window, ending now (or at --at): 30s, 5m, 1h, 24h, 7d.
        #[arg(long, short = 'w', default_value = "5m")]
        window: String,
        /// End of the window: an RFC 3339 time or epoch milliseconds. Default: now.
        #[arg(long)]
        at: Option<String>,
        /// Only the calls of this flow (a label services set at the entry and carry
        /// through every hop, e.g. checkout-page).
        #[arg(long)]
        flow: Option<String>,
        /// Output format.
        #[arg(long, short = 'f', value_enum, default_value = "table")]
        format: client::GraphFormat,
    },
    /// Is context propagated correctly? The verdict of every node (ok, drops context
    /// inbound, drops context outbound, unknown) with the evidence. Exits with 1 when a
    /// node is flagged.
    Propagation {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// Length of the window, ending now (or at --at).
        #[arg(long, short = 'w', default_value = "5m")]
        window: String,
        /// End of the window: an RFC 3339 time or epoch milliseconds. Default: now.
        #[arg(long)]
        at: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The busiest edges, live in the terminal: rates, errors, p50/p99, a sparkline per
    /// edge and the coverage line. Keys: q quit, s sort, / filter, p pause.
    Top {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// Length of the window, ending now: 30s, 1m, 5m, 1h.
        #[arg(long, short = 'w', default_value = "1m")]
        window: String,
        /// Order of the edges (`s` cycles).
        #[arg(long, value_enum, default_value = "rate")]
        sort: top::SortBy,
    },
    /// Show a peer's status: identity, settings, sizes, ingest counters.
    Status {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
    },
    /// Show the peers of the mesh as a peer sees them: connected or not, last sync, how
    /// far behind each side is, settings agreement, rejected messages.
    Peers {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the objectives as a peer evaluates them: breached first, with the SLI, the
    /// budget left, the burn rates and each alert's state; or check objectives files.
    ///
    /// Exits with 1 when an alert is firing, so scripts can tell.
    Objectives {
        #[command(subcommand)]
        command: Option<ObjectivesCommand>,
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
        /// Only the objective of this name.
        #[arg(long)]
        name: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a demo: three peers in a mesh on loopback, and a shop of seven services (the
    /// examples' `shop` binary, instrumented with observatory-instrument) reporting to
    /// them. Prints the URLs of the live picture; Ctrl-C stops everything.
    Demo {
        /// The `shop` binary. Default: next to this executable (build it with
        /// `cargo build --release -p observatory-examples --bin shop`).
        #[arg(long, value_name = "PATH")]
        shop: Option<PathBuf>,
        /// HTTP port of the first peer; the other two take the next ports. 0 picks free ones.
        #[arg(long, default_value_t = 7070)]
        http_port: u16,
        /// User requests per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Stop the load after this many user requests, then print what the shop made as
        /// one JSON line (the peers keep running until Ctrl-C).
        #[arg(long)]
        requests: Option<u64>,
        /// Make one service lose the request's context on a share of its outbound calls,
        /// as SERVICE=SHARE, e.g. cart=0.3.
        #[arg(long, value_name = "SERVICE=SHARE")]
        drop_context: Option<String>,
        /// Keep the peers' data here instead of a temporary dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a failure simulation: many peers on virtual time under the faults a scenario
    /// scripts, with exact invariants checked (see simulations/README.md).
    ///
    /// Prints a summary table, writes report.json and convergence.svg to --out, and exits
    /// with 0 when every invariant held, 1 when one did not (printing the seed and the
    /// command that replays it), 2 on a bad scenario.
    Sim {
        /// The scenario file, e.g. simulations/partition-heal.yaml.
        scenario: PathBuf,
        /// Seed of every random choice (default: the scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Directory for report.json and convergence.svg.
        #[arg(long, default_value = "target/sim", value_name = "DIR")]
        out: PathBuf,
        /// Run with this many peers at the start instead of the scenario's count.
        #[arg(long)]
        peers: Option<usize>,
        /// Print nothing but errors; the exit status and the files still tell.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ObjectivesCommand {
    /// Validate objectives files (every error names the file, the objective and the key)
    /// and print each objective with its fingerprint, and the set's fingerprint peers
    /// compare.
    Check {
        /// The YAML files, read as one set.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A config file whose `objectives.*` defaults (min_calls, for, keep_firing_for,
        /// lookback) apply; without it, the documented defaults.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Ask a peer to read its objectives files again (like SIGHUP); a bad file keeps the
    /// objectives in force, and the error says why.
    Reload {
        /// URL of the peer's HTTP API.
        #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
        peer: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with the environment overrides that apply) and print the
    /// settings fingerprint peers will compare.
    Check {
        /// The YAML file.
        file: PathBuf,
    },
    /// Print the documented default configuration.
    Default,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OBSERVATORY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(colours).with_env_filter(filter).init();
}

/// Loads and validates the configuration, the mesh's addresses and key file included.
fn load_config(file: Option<&std::path::Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let config = Config::load(file, overrides)?;
    observatory_net::MeshSettings::from_config(&config)?;
    Ok(config)
}

/// `SERVICE=SHARE` of `demo --drop-context`.
fn parse_drop_context(text: &str) -> anyhow::Result<(String, f64)> {
    let (service, share) = text
        .split_once('=')
        .with_context(|| format!("--drop-context {text:?}: write SERVICE=SHARE, e.g. cart=0.3"))?;
    let share: f64 =
        share.parse().with_context(|| format!("--drop-context {text:?}: the share is a number"))?;
    Ok((service.to_string(), share))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Peer { config, data_dir, http, listen, bootstrap, no_mdns, otlp, otlp_grpc } => {
            init_logging();
            let overrides = Overrides {
                data_dir,
                http_addr: http,
                listen,
                bootstrap,
                no_mdns,
                otlp_addr: otlp,
                otlp_grpc_addr: otlp_grpc,
            };
            let config = load_config(config.as_deref(), &overrides)?;
            runtime()?.block_on(peer::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { peer, file } => {
            let all_accepted = runtime()?.block_on(client::send(&peer, &file))?;
            Ok(if all_accepted { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Graph { peer, window, at, flow, format } => {
            runtime()?.block_on(client::graph(&peer, &window, at.as_deref(), flow.as_deref(), format))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Propagation { peer, window, at, json } => {
            let flagged = runtime()?.block_on(client::propagation(&peer, &window, at.as_deref(), json))?;
            Ok(if flagged { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Top { peer, window, sort } => {
            top::run(&peer, &window, sort, std::time::Duration::from_secs(1))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { peer } => {
            runtime()?.block_on(client::status(&peer))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Peers { peer, json } => {
            runtime()?.block_on(client::peers(&peer, json))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Objectives { command: None, peer, name, json } => {
            let breached = runtime()?.block_on(client::objectives(&peer, name.as_deref(), json))?;
            Ok(if breached { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Objectives { command: Some(ObjectivesCommand::Check { files, config }), .. } => {
            let config = match config {
                Some(file) => load_config(Some(&file), &Overrides::default())?,
                None => Config::defaults().clone(),
            };
            print!("{}", client::check_objectives(&config, &files)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Objectives { command: Some(ObjectivesCommand::Reload { peer }), .. } => {
            runtime()?.block_on(client::reload_objectives(&peer))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = load_config(Some(&file), &Overrides::default())?;
            let settings = config.settings()?;
            println!("{}: ok", file.display());
            println!("settings fingerprint: {} ({})", settings.fingerprint(), settings.canonical());
            let files = config.objective_files();
            if !files.is_empty() {
                print!("{}", client::check_objectives(&config, &files)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { shop, http_port, rate, requests, drop_context, data_dir } => {
            let drop_context = match drop_context {
                None => None,
                Some(text) => Some(parse_drop_context(&text)?),
            };
            runtime()?.block_on(demo::run(demo::DemoArgs {
                shop,
                http_port,
                rate,
                requests,
                drop_context,
                data_dir,
            }))
        }
        Command::Sim { scenario, seed, out, peers, quiet } => {
            sim_cmd::run(sim_cmd::SimArgs { scenario, seed, out, peers, quiet })
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", observatory_config::DEFAULT_YAML);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
