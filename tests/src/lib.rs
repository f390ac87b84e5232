//! Helpers for the end-to-end tests: start real `observatory` processes, talk to them
//! over HTTP, stop them with SIGTERM or SIGKILL.
//!
//! The binary is built by the tests themselves: the first test to need it runs
//! `cargo build -p observatory` into `<target>/e2e-bin` (a target dir of its own, so it
//! never waits on the lock of the `cargo test` that runs us), which is a quick no-op when
//! nothing changed. `cargo test` alone builds no other package's binary, so without this a
//! fresh clone would have none and a changed tree would test a stale one.
//! `OBSERVATORY_BIN` points the tests at another binary instead.
//!
//! Every wait has a deadline ([`DEADLINE`]); when one passes, the test panics with the
//! process's stderr. Children never inherit `OBSERVATORY_*` variables from the
//! environment of the test run: each test says exactly which ones it sets.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long any single wait may take: a startup line, a process exit, an HTTP answer.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The `observatory` binary under test, built fresh once per test run.
pub fn observatory_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("OBSERVATORY_BIN") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "OBSERVATORY_BIN={} is not a file", path.display());
            return path;
        }
        let exe = std::env::current_exe().expect("the path of the test binary");
        // <target>/debug/deps/e2e-<hash> -> <target>
        let target = exe.ancestors().nth(3).expect("the test binary lives in <target>/<profile>/deps");
        let build_dir = target.join("e2e-bin");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--quiet", "-p", "observatory", "--bin", "observatory"])
            .env("CARGO_TARGET_DIR", &build_dir)
            .current_dir(workspace)
            .output()
            .expect("running cargo to build the observatory binary");
        assert!(
            output.status.success(),
            "building the observatory binary failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = build_dir.join("debug").join(format!("observatory{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "cargo built no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// The demo shop's `shop` binary (examples), built like [`observatory_bin`] into the same
/// target dir, after it (so that the two builds never wait on each other's lock).
pub fn shop_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let observatory = observatory_bin();
        let build_dir =
            observatory.parent().and_then(Path::parent).expect("<target>/e2e-bin/debug/observatory");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--quiet", "-p", "observatory-examples", "--bin", "shop"])
            .env("CARGO_TARGET_DIR", build_dir)
            .current_dir(workspace)
            .output()
            .expect("running cargo to build the shop binary");
        assert!(
            output.status.success(),
            "building the shop failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = build_dir.join("debug").join(format!("shop{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "cargo built no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A command running the binary under test, with no `OBSERVATORY_*` variable inherited.
pub fn observatory_command() -> Command {
    let mut command = Command::new(observatory_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OBSERVATORY_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Whether every program of `programs` runs (`program arg` exits 0). If one does not,
/// says why on stderr and that the test cannot check `what` (install with `install`),
/// and fails instead under `OBSERVATORY_REQUIRE_ALL`, which CI sets.
pub fn programs_available(programs: &[(&str, &str)], what: &str, install: &str) -> bool {
    let missing: Vec<String> = programs
        .iter()
        .filter_map(|(program, arg)| match Command::new(program).arg(arg).output() {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!("`{program} {arg}` failed with {}", output.status)),
            Err(error) => Some(format!("{program} is not installed ({error})")),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{}; cannot check {what} ({install})", missing.join("; "));
    assert!(
        std::env::var_os("OBSERVATORY_REQUIRE_ALL").is_none(),
        "OBSERVATORY_REQUIRE_ALL is set: {reason}"
    );
    eprintln!("skipped: {reason}");
    false
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_millis() as i64
}

/// An RFC 3339 UTC time for `ms` since the epoch (for events with a textual `ts`).
pub fn rfc3339(ms: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), so no date crate is needed.
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Collects everything a reader yields, on a thread.
#[derive(Debug)]
struct Drain {
    buffer: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    fn start(mut reader: impl Read + Send + 'static) -> Drain {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().expect("drain buffer").extend_from_slice(&chunk[..n]),
                }
            }
        });
        Drain { buffer, thread: Some(thread) }
    }

    /// What was read so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("drain buffer")).into_owned()
    }

    /// Waits (up to the deadline) for the end of the stream, then returns everything.
    fn finish(&mut self) -> String {
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + DEADLINE;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        self.text()
    }
}

/// Polls `child` until it exits or the deadline passes.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A finished `observatory` run.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl Finished {
    /// Asserts that it exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.status.success(), "{what}: expected exit 0, got {}\n{self}", self.status);
        self
    }

    /// Asserts a clean failure: a non-zero exit (not a signal), no panic, and a message on
    /// stderr that contains each of `needles`.
    pub fn assert_clean_failure(&self, what: &str, needles: &[&str]) -> &Self {
        assert!(
            self.status.code().is_some_and(|code| code != 0),
            "{what}: expected a non-zero exit code\n{self}"
        );
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: the process panicked instead of failing cleanly\n{self}"
        );
        for needle in needles {
            assert!(self.stderr.contains(needle), "{what}: stderr does not mention `{needle}`\n{self}");
        }
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to its end (with the deadline), feeding it `stdin`.
pub fn run_to_end(mut command: Command, stdin: Option<&[u8]>) -> Finished {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let description = format!("{command:?}");
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut out = Drain::start(child.stdout.take().expect("piped stdout"));
    let mut err = Drain::start(child.stderr.take().expect("piped stderr"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A child that exits early closes the pipe; its exit status tells the story.
        let _ = pipe.write_all(input);
    }
    let Some(status) = wait_with_deadline(&mut child, DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{description} did not exit within {DEADLINE:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            out.finish(),
            err.finish()
        );
    };
    Finished { status, stdout: out.finish(), stderr: err.finish() }
}

/// Runs `observatory ARGS` to its end, with the extra environment `env`.
pub fn run_observatory<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Finished {
    let mut command = observatory_command();
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    run_to_end(command, None)
}

/// The line a peer prints on stdout once it listens.
#[derive(Debug, Clone)]
pub struct Startup {
    /// libp2p peer id.
    pub peer_id: String,
    /// Incarnation of this run.
    pub incarnation: u64,
    /// `IP:PORT` of the HTTP API.
    pub http: String,
    /// The data dir, as the peer names it.
    pub data_dir: String,
    /// Multiaddrs other peers dial, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// `IP:PORT` of the OTLP/HTTP listener, if it has one.
    pub otlp: Option<String>,
    /// `IP:PORT` of the OTLP/gRPC listener, if it has one.
    pub otlp_grpc: Option<String>,
}

/// How to start a peer.
#[derive(Debug, Default)]
pub struct PeerBuilder {
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    no_http_flag: bool,
    no_otlp_flag: bool,
    no_mesh_flags: bool,
}

impl PeerBuilder {
    /// Uses `dir` as the data dir (default: a fresh temporary dir owned by the peer).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Sets an environment variable for the peer.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a command-line argument after `peer --data-dir DIR --http 127.0.0.1:0
    /// --listen /ip4/127.0.0.1/tcp/0 --no-mdns`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Leaves out `--listen /ip4/127.0.0.1/tcp/0 --no-mdns`, so the config decides how
    /// the peer joins a mesh.
    pub fn without_mesh_flags(mut self) -> Self {
        self.no_mesh_flags = true;
        self
    }

    /// Leaves out `--http 127.0.0.1:0`, so the config decides where to listen.
    pub fn without_http_flag(mut self) -> Self {
        self.no_http_flag = true;
        self
    }

    /// Leaves out `--otlp 127.0.0.1:0 --otlp-grpc 127.0.0.1:0`, so the config decides
    /// where OTLP is served.
    pub fn without_otlp_flag(mut self) -> Self {
        self.no_otlp_flag = true;
        self
    }

    fn command(&self, data_dir: &Path) -> Command {
        let mut command = observatory_command();
        command.arg("peer").arg("--data-dir").arg(data_dir);
        if !self.no_http_flag {
            command.args(["--http", "127.0.0.1:0"]);
        }
        // The OTLP listener's default port (4318) is one per machine.
        if !self.no_otlp_flag {
            command.args(["--otlp", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0"]);
        }
        if !self.no_mesh_flags {
            // A mesh port of its own and no mDNS: tests run many peers side by side.
            command.args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]);
        }
        command.args(&self.args);
        // Relative paths the peer might fall back on (./data) land in the data dir's parent.
        if let Some(parent) = data_dir.parent() {
            command.current_dir(parent);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts the peer and waits for its startup line.
    pub fn spawn(self) -> Peer {
        let (temp, data_dir) = match &self.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().expect("creating a temporary data dir");
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        let mut command = self.command(&data_dir);
        let description = format!("{command:?}");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let stderr = Drain::start(child.stderr.take().expect("piped stderr"));
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_thread = std::thread::spawn(move || read_startup_then_drain(stdout, line_tx));
        let mut peer = Peer {
            child,
            startup: None,
            data_dir,
            stderr,
            stdout_thread: Some(stdout_thread),
            _temp: temp,
            client: reqwest::blocking::Client::builder()
                .timeout(DEADLINE)
                .build()
                .expect("building the HTTP client"),
            exited: None,
            stderr_reported: false,
        };
        let line = match line_rx.recv_timeout(DEADLINE) {
            Ok(Some(line)) => line,
            Ok(None) => peer.fail(&format!("{description} closed stdout without a startup line")),
            Err(_) => peer.fail(&format!("{description} printed no startup line within {DEADLINE:?}")),
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| peer.fail(&format!("the startup line is not JSON ({e}): {line}")));
        let text = |key: &str| value[key].as_str().map(str::to_string);
        let startup = match (
            text("event"),
            text("peer_id"),
            value["incarnation"].as_u64(),
            text("http"),
            text("data_dir"),
        ) {
            (Some(event), Some(peer_id), Some(incarnation), Some(http), Some(data_dir))
                if event == "listening" =>
            {
                let listen = value["listen"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let otlp = value["otlp"].as_str().map(str::to_string);
                let otlp_grpc = value["otlp_grpc"].as_str().map(str::to_string);
                Startup { peer_id, incarnation, http, data_dir, listen, otlp, otlp_grpc }
            }
            _ => {
                peer.fail(&format!("the startup line lacks event/peer_id/incarnation/http/data_dir: {line}"))
            }
        };
        peer.startup = Some(startup);
        peer
    }

    /// Runs the peer expecting it to exit by itself (it should refuse to start).
    pub fn run_to_exit(self) -> Finished {
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => panic!("run_to_exit needs an explicit data dir"),
        };
        run_to_end(self.command(&data_dir), None)
    }
}

fn read_startup_then_drain(stdout: ChildStdout, line_tx: mpsc::Sender<Option<String>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let first = match reader.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim_end().to_string()),
        _ => None,
    };
    let _ = line_tx.send(first);
    // Keep the pipe open and empty for as long as the peer lives.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// An HTTP answer: status and body (JSON when it parses, else a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// Asserts the status and returns the body.
    pub fn expect_status(self, status: u16, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: unexpected HTTP status; body: {}", self.body);
        self.body
    }
}

/// A running `observatory peer`, killed when dropped.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    startup: Option<Startup>,
    data_dir: PathBuf,
    stderr: Drain,
    stdout_thread: Option<JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
    client: reqwest::blocking::Client,
    exited: Option<ExitStatus>,
    /// Whether a panic message already carries the stderr (so Drop need not print it).
    stderr_reported: bool,
}

impl Peer {
    /// Starts a peer on a fresh temporary data dir with default settings.
    pub fn start() -> Peer {
        Peer::builder().spawn()
    }

    /// A builder for a peer with other settings.
    pub fn builder() -> PeerBuilder {
        PeerBuilder::default()
    }

    /// Kills the peer and panics with `message` and the peer's stderr.
    fn fail(&mut self, message: &str) -> ! {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.stderr_reported = true;
        panic!("{message}\n--- peer stderr:\n{}", self.stderr.finish());
    }

    /// The startup line.
    pub fn startup(&self) -> &Startup {
        self.startup.as_ref().expect("the peer printed its startup line")
    }

    /// The data dir the peer was started with.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What the peer wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.startup().http)
    }

    fn answer(&self, what: &str, response: reqwest::Result<reqwest::blocking::Response>) -> Answer {
        let response = response.unwrap_or_else(|e| {
            panic!("{what}: no HTTP answer from the peer: {e}\n--- peer stderr:\n{}", self.stderr())
        });
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_else(|e| panic!("{what}: cannot read the answer: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.url());
        self.answer(&format!("GET {path}"), self.client.get(url).send())
    }

    /// `POST /api/v1/events` with a body of the given content type.
    pub fn post_events(&self, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        let url = format!("{}/api/v1/events", self.url());
        let request = self.client.post(url).header("content-type", content_type).body(body.into());
        self.answer("POST /api/v1/events", request.send())
    }

    /// Writes `request` (a whole HTTP/1.1 request, which should say `Connection: close`)
    /// in one write on a new connection and returns everything the peer answers, up to
    /// its close. For requests a regular client cannot make, such as a chunked body sent
    /// whole before the answer is read.
    pub fn raw_request(&self, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(&self.startup().http).expect("connecting to the peer");
        stream.set_read_timeout(Some(DEADLINE)).expect("setting a read timeout");
        stream.write_all(request).expect("writing the request");
        let mut answer = Vec::new();
        if let Err(e) = stream.read_to_end(&mut answer) {
            panic!(
                "reading the answer to a raw request: {e}; got so far: {}\n--- peer stderr:\n{}",
                String::from_utf8_lossy(&answer),
                self.stderr()
            );
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// `POST /api/v2/spans` of Zipkin v2 JSON spans, asserting 202.
    pub fn post_zipkin(&self, spans: &Value) -> Answer {
        let url = format!("{}/api/v2/spans", self.url());
        let request =
            self.client.post(url).header("content-type", "application/json").body(spans.to_string());
        let answer = self.answer("POST /api/v2/spans", request.send());
        assert_eq!(answer.status, 202, "Zipkin spans taken: {:?}", answer.body);
        answer
    }

    /// Posts `events` as NDJSON and returns the answer, whatever its status.
    pub fn post_ndjson_raw(&self, events: &[Value]) -> Answer {
        self.post_events("application/x-ndjson", ndjson(events))
    }

    /// Posts `events` as NDJSON, asserts 200 and returns the ingest answer.
    pub fn post_ndjson(&self, events: &[Value]) -> Value {
        self.post_ndjson_raw(events).expect_status(200, "posting NDJSON events")
    }

    /// Posts `events` as a JSON array, asserts 200 and returns the ingest answer.
    pub fn post_json_array(&self, events: &[Value]) -> Value {
        self.post_events("application/json", Value::Array(events.to_vec()).to_string())
            .expect_status(200, "posting a JSON array of events")
    }

    /// `GET /api/v1/graph?window=WINDOW`, asserting 200.
    pub fn graph(&self, window: &str) -> Value {
        self.get(&format!("/api/v1/graph?window={window}")).expect_status(200, "reading the graph")
    }

    /// `GET /api/v1/status`, asserting 200.
    pub fn status(&self) -> Value {
        self.get("/api/v1/status").expect_status(200, "reading the status")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (with the deadline) for the peer to exit; returns everything
    /// it wrote on stderr. Panics unless it exits 0 without panicking.
    pub fn sigterm_and_wait(self) -> String {
        self.signal_and_wait("TERM", DEADLINE)
    }

    /// Like [`Peer::sigterm_and_wait`], with a given deadline for the stop.
    pub fn sigterm_and_wait_within(self, deadline: Duration) -> String {
        self.signal_and_wait("TERM", deadline)
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits like [`Peer::sigterm_and_wait`].
    pub fn sigint_and_wait(self) -> String {
        self.signal_and_wait("INT", DEADLINE)
    }

    fn signal_and_wait(mut self, signal: &str, deadline: Duration) -> String {
        let pid = self.pid().to_string();
        let kill = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("running kill");
        assert!(kill.success(), "kill -{signal} {pid} failed: {kill}");
        let Some(status) = wait_with_deadline(&mut self.child, deadline) else {
            self.fail(&format!("the peer did not stop within {deadline:?} after SIG{signal}"));
        };
        self.exited = Some(status);
        let stderr = self.stderr.finish();
        self.stderr_reported = true;
        assert!(
            status.success(),
            "after SIG{signal} the peer exited with {status}, not 0\n--- peer stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "the peer panicked while stopping\n--- peer stderr:\n{stderr}");
        stderr
    }

    /// Kills the peer with SIGKILL (no chance to flush) and reaps it.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the peer");
        self.exited = Some(self.child.wait().expect("reaping the peer"));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && !self.stderr_reported {
            // The harness shows this with the failing test's output.
            eprintln!("--- stderr of peer {}:\n{}", self.data_dir.display(), self.stderr.finish());
        }
        if let Some(thread) = self.stdout_thread.take()
            && thread.is_finished()
        {
            let _ = thread.join();
        }
    }
}

/// Events as NDJSON: one JSON object per line.
pub fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Per-edge figures read from a graph answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EdgeTotals {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Bytes.
    pub bytes: u64,
}

/// `(from, to) -> totals` of every edge in a graph answer; panics on a duplicate edge.
pub fn edge_totals(graph: &Value) -> BTreeMap<(String, String), EdgeTotals> {
    let edges =
        graph["edges"].as_array().unwrap_or_else(|| panic!("the graph has no `edges` array: {graph}"));
    let mut totals = BTreeMap::new();
    for edge in edges {
        let text = |key: &str| {
            edge[key].as_str().unwrap_or_else(|| panic!("edge without `{key}`: {edge}")).to_string()
        };
        let number = |key: &str| edge[key].as_u64().unwrap_or_else(|| panic!("edge without `{key}`: {edge}"));
        let key = (text("from"), text("to"));
        let value = EdgeTotals { calls: number("calls"), errors: number("errors"), bytes: number("bytes") };
        assert!(totals.insert(key.clone(), value).is_none(), "edge {key:?} listed twice: {graph}");
    }
    totals
}

/// The node names of a graph answer.
pub fn node_names(graph: &Value) -> BTreeSet<String> {
    graph["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("the graph has no `nodes` array: {graph}"))
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_else(|| panic!("node without a name: {n}")).to_string())
        .collect()
}

/// One edge object of a graph answer.
pub fn find_edge<'a>(graph: &'a Value, from: &str, to: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["from"] == from && e["to"] == to))
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in the graph: {graph}"))
}

/// A `(from, to)` key for [`edge_totals`].
pub fn key(from: &str, to: &str) -> (String, String) {
    (from.to_string(), to.to_string())
}

/// An event on `from -> to` stamped now, with `extra` fields merged in.
pub fn event(from: &str, to: &str, extra: Value) -> Value {
    let mut event = json!({ "from": from, "to": to, "ts": now_ms() });
    if let (Some(target), Value::Object(fields)) = (event.as_object_mut(), extra) {
        target.extend(fields);
    }
    event
}

/// `(index, field)` of each per-event error in an ingest answer.
pub fn error_fields(answer: &Value) -> Vec<(u64, String)> {
    answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("the ingest answer has no `errors` array: {answer}"))
        .iter()
        .map(|e| {
            let index = e["index"].as_u64().unwrap_or_else(|| panic!("error without index: {e}"));
            let field = e["field"].as_str().unwrap_or_else(|| panic!("error without field: {e}")).to_string();
            (index, field)
        })
        .collect()
}

/// A minimal CBOR encoder for event arrays (maps of text keys to text, integers, floats
/// and booleans), so the tests need no CBOR crate.
pub fn cbor_events(events: &[Value]) -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let major = major << 5;
        match n {
            0..=23 => out.push(major | n as u8),
            24..=0xff => out.extend([major | 24, n as u8]),
            0x100..=0xffff => {
                out.push(major | 25);
                out.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(major | 26);
                out.extend((n as u32).to_be_bytes());
            }
            _ => {
                out.push(major | 27);
                out.extend(n.to_be_bytes());
            }
        }
    }
    fn item(out: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => out.push(0xf6),
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    head(out, 0, u);
                } else if let Some(i) = n.as_i64() {
                    head(out, 1, (-1 - i) as u64);
                } else {
                    out.push(0xfb);
                    out.extend(n.as_f64().expect("a JSON number").to_be_bytes());
                }
            }
            Value::String(s) => {
                head(out, 3, s.len() as u64);
                out.extend(s.as_bytes());
            }
            Value::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    item(out, i);
                }
            }
            Value::Object(map) => {
                head(out, 5, map.len() as u64);
                for (k, v) in map {
                    head(out, 3, k.len() as u64);
                    out.extend(k.as_bytes());
                    item(out, v);
                }
            }
        }
    }
    let mut out = Vec::new();
    item(&mut out, &Value::Array(events.to_vec()));
    out
}

/// How often peers sync in the mesh tests: short, so a mesh converges within a second
/// or two instead of the default 1 s rounds.
pub const MESH_SYNC_INTERVAL: &str = "200ms";

impl PeerBuilder {
    /// Joins a mesh through `addr` (`--bootstrap ADDR`, repeatable).
    pub fn bootstrap(self, addr: &str) -> Self {
        self.arg("--bootstrap").arg(addr)
    }

    /// Syncs every [`MESH_SYNC_INTERVAL`] (`OBSERVATORY_MESH__SYNC_INTERVAL`).
    pub fn fast_sync(self) -> Self {
        self.env("OBSERVATORY_MESH__SYNC_INTERVAL", MESH_SYNC_INTERVAL)
    }
}

impl Peer {
    /// The peer id of this run.
    pub fn peer_id(&self) -> &str {
        &self.startup().peer_id
    }

    /// The first multiaddr (with `/p2p/<peer id>`) other peers dial to reach this one.
    pub fn mesh_addr(&self) -> &str {
        self.startup().listen.first().unwrap_or_else(|| panic!("the peer listens on no mesh address"))
    }

    /// `GET /api/v1/peers`, asserting 200.
    pub fn peers(&self) -> Value {
        self.get("/api/v1/peers").expect_status(200, "reading the peers")
    }
}

/// Calls `probe` every 50 ms until it returns `Ok`, and returns that; panics with `what`
/// and the probe's last error once `deadline` has passed.
pub fn wait_until<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= end => panic!("{what}: not so within {deadline:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Writes a swarm key file (the format of `mesh.psk_file`) holding `key_hex`, 64 hex digits.
pub fn write_swarm_key(path: &Path, key_hex: &str) {
    assert_eq!(key_hex.len(), 64, "a swarm key is 64 hex digits");
    std::fs::write(path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{key_hex}\n"))
        .expect("writing a swarm key");
}

/// Latency figures of an edge, in whole microseconds (the API gives milliseconds with
/// three decimals, so these are exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyFigures {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Highest.
    pub max_us: u64,
    /// Mean, rounded to the microsecond.
    pub mean_us: u64,
    /// Calls that reported a latency.
    pub samples: u64,
}

/// Everything a graph answer says of one edge except its rate (which depends on when the
/// graph is asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeFigures {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Bytes.
    pub bytes: u64,
    /// Latency, if any call reported one.
    pub latency: Option<LatencyFigures>,
}

/// `(from, to) -> figures` of every edge in a graph answer; panics on a duplicate edge.
pub fn edge_figures(graph: &Value) -> BTreeMap<(String, String), EdgeFigures> {
    let totals = edge_totals(graph);
    let edges = graph["edges"].as_array().expect("edge_totals checked the array");
    let us = |latency: &Value, key: &str| {
        let ms = latency[key].as_f64().unwrap_or_else(|| panic!("latency without `{key}`: {latency}"));
        (ms * 1000.0).round() as u64
    };
    edges
        .iter()
        .map(|edge| {
            let key = key(edge["from"].as_str().unwrap_or_default(), edge["to"].as_str().unwrap_or_default());
            let t = totals[&key];
            let latency = &edge["latency_ms"];
            let latency = (!latency.is_null()).then(|| LatencyFigures {
                p50_us: us(latency, "p50"),
                p90_us: us(latency, "p90"),
                p95_us: us(latency, "p95"),
                p99_us: us(latency, "p99"),
                max_us: us(latency, "max"),
                mean_us: us(latency, "mean"),
                samples: latency["samples"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("latency without `samples`: {latency}")),
            });
            (key, EdgeFigures { calls: t.calls, errors: t.errors, bytes: t.bytes, latency })
        })
        .collect()
}

/// What the graph must say after a set of events, computed independently of the peer: the
/// latencies go into an `hdrhistogram` with the mesh-wide bounds (1 µs to 1 h, 2 significant
/// digits), whose definitions of quantiles, max and mean the peer follows exactly.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    edges: BTreeMap<(String, String), ExpectedEdge>,
}

#[derive(Debug, Clone)]
struct ExpectedEdge {
    calls: u64,
    errors: u64,
    bytes: u64,
    latency: hdrhistogram::Histogram<u64>,
}

impl Expected {
    /// Adds accepted events (fields as in the ingest API: `count` multiplies the call,
    /// its error and its latency; `bytes` is the event's total).
    pub fn add(&mut self, events: &[Value]) {
        for event in events {
            let text = |k: &str| event[k].as_str().unwrap_or_else(|| panic!("event without `{k}`: {event}"));
            let count = event["count"].as_u64().unwrap_or(1);
            let edge = self.edges.entry(key(text("from"), text("to"))).or_insert_with(|| ExpectedEdge {
                calls: 0,
                errors: 0,
                bytes: 0,
                latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .expect("the mesh-wide histogram bounds"),
            });
            edge.calls += count;
            if event["error"].as_bool().unwrap_or(false) {
                edge.errors += count;
            }
            edge.bytes += event["bytes"].as_u64().unwrap_or(0);
            if let Some(ms) = event["latency_ms"].as_f64() {
                let us = (ms * 1000.0).round() as u64;
                edge.latency.record_n(us, count).expect("a latency within the bounds");
            }
        }
    }

    /// Adds everything `other` expects.
    pub fn merge(&mut self, other: &Expected) {
        for (key, theirs) in &other.edges {
            match self.edges.get_mut(key) {
                Some(ours) => {
                    ours.calls += theirs.calls;
                    ours.errors += theirs.errors;
                    ours.bytes += theirs.bytes;
                    ours.latency.add(&theirs.latency).expect("histograms of equal bounds");
                }
                None => {
                    self.edges.insert(key.clone(), theirs.clone());
                }
            }
        }
    }

    /// The figures, as [`edge_figures`] reads them from a graph answer.
    pub fn figures(&self) -> BTreeMap<(String, String), EdgeFigures> {
        self.edges
            .iter()
            .map(|(key, e)| {
                let h = &e.latency;
                let latency = (!h.is_empty()).then(|| LatencyFigures {
                    p50_us: h.value_at_quantile(0.50),
                    p90_us: h.value_at_quantile(0.90),
                    p95_us: h.value_at_quantile(0.95),
                    p99_us: h.value_at_quantile(0.99),
                    max_us: h.max(),
                    mean_us: h.mean().round() as u64,
                    samples: h.len(),
                });
                (key.clone(), EdgeFigures { calls: e.calls, errors: e.errors, bytes: e.bytes, latency })
            })
            .collect()
    }
}

/// Says how `actual` differs from `expected`, edge by edge; `None` when they are equal.
pub fn figures_diff(
    actual: &BTreeMap<(String, String), EdgeFigures>,
    expected: &BTreeMap<(String, String), EdgeFigures>,
) -> Option<String> {
    if actual == expected {
        return None;
    }
    let keys: BTreeSet<_> = actual.keys().chain(expected.keys()).collect();
    let lines: Vec<String> = keys
        .into_iter()
        .filter(|k| actual.get(*k) != expected.get(*k))
        .map(|(from, to)| {
            format!(
                "{from} -> {to}: got {:?}, expected {:?}",
                actual.get(&key(from, to)),
                expected.get(&key(from, to))
            )
        })
        .collect();
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_334_400_123), "2026-11-22T08:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cbor_encodes_like_the_rfc_examples() {
        // RFC 8949 appendix A.
        assert_eq!(cbor_events(&[json!(1000)]), [0x81, 0x19, 0x03, 0xe8]);
        assert_eq!(cbor_events(&[json!(-10)]), [0x81, 0x29]);
        assert_eq!(cbor_events(&[json!("a")]), [0x81, 0x61, 0x61]);
        assert_eq!(cbor_events(&[json!({"a": true})]), [0x81, 0xa1, 0x61, 0x61, 0xf5]);
        assert_eq!(cbor_events(&[json!(1.5)]), [0x81, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    }
}
