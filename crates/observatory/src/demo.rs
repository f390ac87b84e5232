//! `observatory demo`: three peers in a mesh on loopback and the demo shop (the `shop`
//! binary of the examples: seven services as processes, instrumented with
//! `observatory-instrument`) reporting to different peers.
//!
//! Every child is owned: started in order (peers, then the shop's services leaves
//! first), stopped in reverse on Ctrl-C or SIGTERM (SIGTERM to each, so that services
//! flush their reports and peers their stores), and waited for. With `--requests N`
//! the load stops after N user requests; the demo then stops the services and prints one
//! JSON line with what they made (`{"event":"made",...}`), and keeps the peers running
//! until it is stopped, so that the graph can be compared with it.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// What `observatory demo` was asked.
#[derive(Debug)]
pub struct DemoArgs {
    /// The `shop` binary; default: next to this executable.
    pub shop: Option<PathBuf>,
    /// HTTP port of the first peer; the others take the next two. 0 picks free ports.
    pub http_port: u16,
    /// User requests per second.
    pub rate: f64,
    /// Stop the load after this many requests.
    pub requests: Option<u64>,
    /// The service that loses context, and on which share of its outbound calls.
    pub drop_context: Option<(String, f64)>,
    /// Where the peers keep their data; default: a temporary dir, removed at the end.
    pub data_dir: Option<PathBuf>,
}

/// A child process with its stdout lines.
struct Proc {
    name: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Self { name: name.to_string(), child, lines: BufReader::new(stdout).lines() })
    }

    /// The next JSON line on its stdout whose `event` is `event`.
    async fn wait_for(&mut self, event: &str) -> anyhow::Result<Value> {
        let wait = async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && value["event"] == event
                {
                    return Ok(value);
                }
            }
            bail!("{} exited before saying {event:?} (see its messages above)", self.name)
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .with_context(|| format!("{} did not say {event:?} within 60 s", self.name))?
    }

    /// SIGTERM, then waits (SIGKILL after 20 s).
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("a pid")?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for {}", self.name))?;
            }
            Err(_) => {
                eprintln!("demo: {} did not stop within 20 s; killing it", self.name);
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

fn shop_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe().context("finding this executable")?.with_file_name("shop"),
    };
    if !path.is_file() {
        bail!(
            "the demo shop is the `shop` binary of the examples, and there is none at {}; build it with \
             `cargo build --release -p observatory-examples --bin shop` (the profile of this observatory) \
             or pass --shop PATH",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let shop = shop_binary(args.shop.clone())?;
    if let Some((service, share)) = &args.drop_context {
        if !["web", "cart", "users"].contains(&service.as_str()) {
            bail!("--drop-context {service}: only web, cart and users call on; name one of them");
        }
        if !(0.0..=1.0).contains(share) {
            bail!("--drop-context {service}={share}: the share is from 0 to 1");
        }
    }
    let temp;
    let data = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("making a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut stop = Stop::new()?;

    let mut peers: Vec<Proc> = Vec::new();
    let mut peer_urls: Vec<String> = Vec::new();
    let mut bootstrap: Option<String> = None;
    for i in 0..3u16 {
        let port = if args.http_port == 0 { 0 } else { args.http_port + i };
        let mut command = Command::new(&exe);
        // The peers' start-up lines would drown the demo's own; warnings still show.
        if std::env::var_os("OBSERVATORY_LOG").is_none() {
            command.env("OBSERVATORY_LOG", "warn");
        }
        command
            .arg("peer")
            .arg("--data-dir")
            .arg(data.join(format!("peer-{}", i + 1)))
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--otlp",
                "127.0.0.1:0",
                "--otlp-grpc",
                "127.0.0.1:0",
                "--no-mdns",
            ]);
        if let Some(address) = &bootstrap {
            command.args(["--bootstrap", address]);
        }
        let mut peer = Proc::spawn(&format!("peer {}", i + 1), &mut command)?;
        let started = peer.wait_for("listening").await?;
        let http = started["http"].as_str().context("the peer's startup line names its HTTP address")?;
        peer_urls.push(format!("http://{http}"));
        if bootstrap.is_none() {
            bootstrap = started["listen"].get(0).and_then(Value::as_str).map(str::to_string);
        }
        peers.push(peer);
    }

    // Leaves first, so that every service starts knowing where its callees are.
    let order = ["catalog", "payments", "queue", "cart", "web", "shipping", "users"];
    let mut urls: Vec<(&str, String)> = Vec::new();
    let mut services: Vec<Proc> = Vec::new();
    for (i, service) in order.iter().enumerate() {
        let peer = &peer_urls[i % peer_urls.len()];
        let mut command = Command::new(&shop);
        command.arg(service).args(["--peer", peer]);
        // Shipping only listens for `/made`: nobody calls it.
        for (name, url) in urls.iter().filter(|(name, _)| *name != "shipping") {
            command.arg(format!("--{name}")).arg(url);
        }
        if *service == "users" {
            command.args(["--rate", &args.rate.to_string()]);
            if let Some(n) = args.requests {
                command.args(["--requests", &n.to_string()]);
            }
        }
        if let Some((dropper, share)) = &args.drop_context
            && dropper == service
        {
            command.args(["--drop-context", &share.to_string()]);
        }
        let mut proc = Proc::spawn(service, &mut command)?;
        if *service == "users" {
            proc.wait_for("started").await?;
        } else {
            let listening = proc.wait_for("listening").await?;
            let addr = listening["addr"].as_str().context("a service names its address")?;
            urls.push((service, format!("http://{addr}")));
        }
        services.push(proc);
    }

    let started = json!({
        "event": "started",
        "peers": peer_urls,
        "services": urls.iter().map(|(name, url)| json!({"service": name, "url": url})).collect::<Vec<_>>(),
    });
    println!("{started}");
    eprintln!(
        "demo: three peers in a mesh, the shop's seven services reporting to them ({} requests/s)",
        args.rate
    );
    for (i, url) in peer_urls.iter().enumerate() {
        eprintln!("  peer {}: {url}/   (the live picture)", i + 1);
    }
    eprintln!("  the graph:  observatory graph --peer {} --window 1m", peer_urls[0]);
    eprintln!("  live table: observatory top --peer {}", peer_urls[1]);
    eprintln!("  one flow:   observatory graph --peer {} --window 1m --flow checkout-page", peer_urls[2]);
    eprintln!("  context:    observatory propagation --peer {}", peer_urls[0]);
    eprintln!("Ctrl-C stops everything.");

    if args.requests.is_some() {
        let users = services.last_mut().expect("users runs");
        tokio::select! {
            status = users.child.wait() => { status.context("waiting for users")?; }
            () = stop.wait() => {}
        }
        // Let shipping take the last orders off the queue.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let made = stop_services(&mut services).await?;
        println!("{}", json!({"event": "made", "edges": made}));
        eprintln!("demo: the load is done; the peers keep running until Ctrl-C.");
        stop.wait().await;
    } else {
        stop.wait().await;
        stop_services(&mut services).await?;
    }
    for peer in peers.iter_mut().rev() {
        peer.stop().await?;
    }
    eprintln!("demo: stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Stops the services in reverse order and sums what they made.
async fn stop_services(services: &mut [Proc]) -> anyhow::Result<Vec<Value>> {
    let mut made = Vec::new();
    for service in services.iter_mut().rev() {
        if let Some(pid) = service.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("a pid")?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match service.wait_for("stopped").await {
            Ok(stopped) => made.extend(stopped["made"].as_array().cloned().unwrap_or_default()),
            Err(error) => eprintln!("demo: {error:#}"),
        }
        service.stop().await?;
    }
    Ok(made)
}

/// Ctrl-C or SIGTERM.
struct Stop {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
