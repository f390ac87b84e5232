//! The README's "two peers on one machine" example, run as written.
//!
//! The commands are read from the README itself (the code block after "Two peers on one
//! machine"), with `cargo run --release --` standing for the binary this test suite built,
//! and run in a network namespace of their own: it has a loopback of its own, so the
//! example's fixed ports (7070, 7071, 7000, 7001 and the OTLP defaults 4318 and 4317)
//! cannot clash with anything else on the machine, and the second peer meets the first
//! one's OTLP listeners exactly as a user's would.
//!
//! Needs root and `ip` (iproute2): without them it says why and passes, unless
//! `OBSERVATORY_REQUIRE_ALL` is set (as in CI).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use observatory_e2e::{DEADLINE, observatory_bin, wait_until};
use serde_json::{Value, json};

const README: &str = include_str!("../../README.md");
const HEADING: &str = "Two peers on one machine";
const CARGO_RUN: &str = "cargo run --release -- ";

/// The shell commands of the first `sh` block after `heading`, continuation lines
/// joined, comments removed.
fn example_commands(readme: &str, heading: &str) -> Vec<String> {
    let after = &readme[readme.find(heading).unwrap_or_else(|| panic!("the README has no {heading:?}"))..];
    let block = after.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    commands.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                current.clear();
            }
        }
    }
    commands
}

/// The arguments after `cargo run --release --`; the README's commands all run the peer.
fn observatory_args(command: &str) -> Vec<String> {
    let rest = command
        .strip_prefix(CARGO_RUN)
        .unwrap_or_else(|| panic!("the README's command does not start with {CARGO_RUN:?}: {command}"));
    rest.split_whitespace().map(str::to_string).collect()
}

struct Namespace(String);

impl Namespace {
    fn create_or_skip() -> Option<Namespace> {
        let reason = match Namespace::create() {
            Ok(ns) => return Some(ns),
            Err(reason) => reason,
        };
        assert!(
            std::env::var_os("OBSERVATORY_REQUIRE_ALL").is_none(),
            "OBSERVATORY_REQUIRE_ALL is set: {reason}"
        );
        eprintln!("skipped: {reason}");
        None
    }

    fn create() -> Result<Namespace, String> {
        if !cfg!(target_os = "linux") {
            return Err("network namespaces need Linux".into());
        }
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        let euid =
            status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|i| i.split_whitespace().nth(1));
        if euid != Some("0") {
            return Err(format!(
                "a network namespace needs root (effective uid {})",
                euid.unwrap_or("unknown")
            ));
        }
        // Named like the partition test's, whose clean-up removes what a killed run left.
        let name = format!("obs-{}-readme", std::process::id());
        ip(&["netns", "add", &name]).map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let ns = Namespace(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]).map_err(|e| format!("cannot bring up lo: {e}"))?;
        Ok(ns)
    }

    fn command(&self, bin: &Path, args: &[String], cwd: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]).arg(bin).args(args).current_dir(cwd);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OBSERVATORY_") {
                command.env_remove(name);
            }
        }
        command.env("NO_COLOR", "1").stdin(Stdio::null());
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for pid in String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "pids", &self.0])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default(),
        )
        .split_whitespace()
        {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output =
        Command::new("ip").args(args).output().map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A peer of the example, its output collected.
struct Running {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let description = format!("{command:?}");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    sink.lock().expect("output").extend_from_slice(&chunk[..n]);
                }
            });
        }
        Running { child, output }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output")).into_owned()
    }

    fn still_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{what} exited ({status}):\n{}", self.text());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readme_two_peer_example_runs_as_written() {
    let commands = example_commands(README, HEADING);
    assert_eq!(commands.len(), 3, "the example is two peers and a `peers` query: {commands:?}");
    let Some(ns) = Namespace::create_or_skip() else { return };
    let bin: PathBuf = observatory_bin();
    let cwd = tempfile::tempdir().expect("a working directory");

    let mut a = Running::start(ns.command(&bin, &observatory_args(&commands[0]), cwd.path()));
    // The second peer starts once the first holds the ports, as a user typing them would.
    wait_until(DEADLINE, "peer a listening", || {
        a.still_running("peer a (the README's first command)");
        let text = a.text();
        text.contains("\"event\":\"listening\"").then_some(()).ok_or(text)
    });
    let mut b = Running::start(ns.command(&bin, &observatory_args(&commands[1]), cwd.path()));
    wait_until(DEADLINE, "peer b listening", || {
        b.still_running("peer b (the README's second command)");
        let text = b.text();
        text.contains("\"event\":\"listening\"").then_some(()).ok_or(text)
    });

    // b finds the OTLP default ports taken by a: warnings, not an exit.
    let b_log = b.text();
    for port in ["127.0.0.1:4318", "127.0.0.1:4317"] {
        assert!(
            b_log.lines().any(|l| l.contains("WARN") && l.contains(port)),
            "peer b warns that the default OTLP port {port} is taken:\n{b_log}"
        );
    }
    let a_log = a.text();
    assert!(
        a_log.contains("\"otlp\":\"127.0.0.1:4318\"") && a_log.contains("\"otlp_grpc\":\"127.0.0.1:4317\""),
        "peer a serves OTLP on the defaults:\n{a_log}"
    );
    assert!(
        b_log.contains("\"otlp\":null") && b_log.contains("\"otlp_grpc\":null"),
        "peer b serves OTLP on its HTTP port only:\n{b_log}"
    );
    // And their status says so.
    for (url, otlp, grpc) in [
        ("http://127.0.0.1:7070", json!("127.0.0.1:4318"), json!("127.0.0.1:4317")),
        ("http://127.0.0.1:7071", Value::Null, Value::Null),
    ] {
        let args = ["status".to_string(), "--peer".to_string(), url.to_string()];
        let output = ns.command(&bin, &args, cwd.path()).output().expect("running `observatory status`");
        let status: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status of {url} is not JSON ({e}): {output:?}"));
        assert_eq!((&status["otlp"], &status["otlp_grpc"]), (&otlp, &grpc), "status of {url}: {status}");
    }

    let peers_args = observatory_args(&commands[2]);
    let mut last = String::new();
    wait_until(DEADLINE, "b sees a connected and in sync", || {
        a.still_running("peer a");
        b.still_running("peer b");
        let output = ns.command(&bin, &peers_args, cwd.path()).output().expect("running `observatory peers`");
        last = String::from_utf8_lossy(&output.stdout).into_owned();
        let first = last.lines().next().unwrap_or_default();
        (output.status.success()
            && first.contains("1 connected, 1 in sync")
            && first.contains("picture complete"))
        .then_some(())
        .ok_or_else(|| format!("{}{}", last, String::from_utf8_lossy(&output.stderr)))
    });
    assert!(
        last.contains("yes") && last.contains("agrees"),
        "the peer row says connected and agreeing:\n{last}"
    );
    assert!(cwd.path().join("a").is_dir() && cwd.path().join("b").is_dir(), "the data dirs are ./a and ./b");
}
