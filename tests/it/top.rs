//! `observatory top` in a real terminal: tmux (which `.ci/run` installs) runs it against a
//! real peer; the pane shows the edges and the coverage line, takes a new edge on its own,
//! answers keys, and `q` (and SIGTERM) end it with the terminal restored and exit status 0.

use std::process::Command;
use std::time::Duration;

use observatory_e2e::{Peer, event, observatory_bin, wait_until};
use serde_json::json;

const PHASE: Duration = Duration::from_secs(30);

fn tmux_available() -> bool {
    observatory_e2e::programs_available(
        &[("tmux", "-V")],
        "`observatory top` in a real terminal",
        "apt-get install tmux",
    )
}

/// A tmux session on its own server socket, killed when dropped.
struct Session {
    socket: String,
}

impl Session {
    fn tmux(&self, args: &[&str]) -> String {
        let output =
            Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("running tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn pane(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

#[test]
fn top_runs_in_a_real_terminal_and_restores_it_on_q() {
    if !tmux_available() {
        return;
    }
    let peer = Peer::start();
    let events = vec![
        event("web", "checkout", json!({ "count": 50, "latency_ms": 20 })),
        event("checkout", "payments", json!({ "count": 10, "latency_ms": 300, "error": true })),
    ];
    peer.post_json_array(&events);
    let session = Session { socket: format!("observatory-top-{}", std::process::id()) };
    let command = format!(
        "{} top --peer {} --window 5m; echo \"top exited with $?\"; sleep 60",
        observatory_bin().display(),
        peer.url()
    );
    session.tmux(&["new-session", "-d", "-s", "top", "-x", "120", "-y", "30", &command]);
    let pane = wait_until(PHASE, "top shows the edges", || {
        let pane = session.pane();
        if pane.contains("web -> checkout") && pane.contains("checkout -> payments") {
            Ok(pane)
        } else {
            Err(pane)
        }
    });
    assert!(pane.contains("complete"), "the coverage line:\n{pane}");
    assert!(pane.contains("EDGE") && pane.contains("RATE/S"), "the header:\n{pane}");

    peer.post_json_array(&[event("payments", "ledger", json!({ "count": 5 }))]);
    wait_until(PHASE, "top takes the new edge without a key", || {
        let pane = session.pane();
        if pane.contains("payments -> ledger") { Ok(()) } else { Err(pane) }
    });
    session.tmux(&["send-keys", "-t", "top", "s"]);
    let sorted = wait_until(PHASE, "s sorts by errors", || {
        let pane = session.pane();
        if pane.contains("sort (errors)") { Ok(pane) } else { Err(pane) }
    });
    let first = sorted.lines().find(|l| l.contains(" -> ")).unwrap_or_default().to_string();
    assert!(first.starts_with("checkout -> payments"), "the failing edge comes first:\n{sorted}");

    session.tmux(&["send-keys", "-t", "top", "q"]);
    let after = wait_until(PHASE, "q ends top", || {
        let pane = session.pane();
        if pane.contains("top exited with") { Ok(pane) } else { Err(pane) }
    });
    assert!(after.contains("top exited with 0"), "exit status 0:\n{after}");
    assert!(!after.contains("RATE/S"), "the terminal is restored (the view is gone):\n{after}");

    // SIGTERM ends it the same way.
    session.tmux(&["new-session", "-d", "-s", "again", "-x", "120", "-y", "30", &command]);
    wait_until(PHASE, "top runs again", || {
        let pane = session.tmux(&["capture-pane", "-p", "-t", "again"]);
        if pane.contains("RATE/S") { Ok(()) } else { Err(pane) }
    });
    let pattern = format!("^{} top --peer", observatory_bin().display());
    let killed = Command::new("pkill").args(["-TERM", "-f", &pattern]).status().expect("running pkill");
    assert!(killed.success(), "pkill found top");
    let after = wait_until(PHASE, "SIGTERM ends top", || {
        let pane = session.tmux(&["capture-pane", "-p", "-t", "again"]);
        if pane.contains("top exited with") { Ok(pane) } else { Err(pane) }
    });
    assert!(
        after.contains("top exited with 0") && !after.contains("RATE/S"),
        "restored on SIGTERM:\n{after}"
    );
}
