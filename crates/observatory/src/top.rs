//! `observatory top`: the busiest edges of a peer's graph, live in the terminal (ratatui).
//!
//! [`Top`] is the view's state: it takes graph answers ([`Top::update`]) and keys
//! ([`Top::key`]) and draws itself into any ratatui backend ([`Top::draw`]), so tests
//! render it into a `TestBackend` from scripted answers. [`run`] drives it on the real
//! terminal: it polls the peer at most once per `interval` (1 s), restores the terminal on
//! `q`, Esc or Ctrl-C, on SIGTERM and SIGHUP, and also when it fails.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use observatory_api::client::Client;
use observatory_api::wire::{EdgeJson, GraphAnswer};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// How many samples of each edge's rate the sparkline shows.
const HISTORY: usize = 24;

/// What the table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Calls per second, busiest first.
    Rate,
    /// Error ratio, worst first.
    Errors,
    /// p99 latency, slowest first.
    P99,
}

impl SortBy {
    fn next(self) -> Self {
        match self {
            SortBy::Rate => SortBy::Errors,
            SortBy::Errors => SortBy::P99,
            SortBy::P99 => SortBy::Rate,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SortBy::Rate => "rate",
            SortBy::Errors => "errors",
            SortBy::P99 => "p99",
        }
    }
}

type Key = (String, String, String);

fn key_of(edge: &EdgeJson) -> Key {
    (edge.from.clone(), edge.to.clone(), edge.kind.clone())
}

/// The view: the last answer, each edge's recent rates, and what the user chose.
#[derive(Debug)]
pub struct Top {
    peer: String,
    sort: SortBy,
    filter: String,
    typing: bool,
    paused: bool,
    answer: Option<GraphAnswer>,
    problem: Option<String>,
    history: BTreeMap<Key, VecDeque<f64>>,
}

impl Top {
    /// A view of `peer`'s graph, sorted by `sort` (the window is the answers').
    pub fn new(peer: &str, sort: SortBy) -> Self {
        Top {
            peer: peer.to_string(),
            sort,
            filter: String::new(),
            typing: false,
            paused: false,
            answer: None,
            problem: None,
            history: BTreeMap::new(),
        }
    }

    /// Whether updates are paused (`p`).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Takes a new answer (ignored while paused): every edge's rate joins its history.
    pub fn update(&mut self, answer: GraphAnswer) {
        if self.paused {
            return;
        }
        for edge in &answer.edges {
            let history = self.history.entry(key_of(edge)).or_default();
            history.push_back(edge.figures.rate_per_s);
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        let live: std::collections::BTreeSet<Key> = answer.edges.iter().map(key_of).collect();
        self.history.retain(|key, _| live.contains(key));
        self.answer = Some(answer);
        self.problem = None;
    }

    /// Says why the last poll failed (the last answer stays on screen).
    pub fn failed(&mut self, problem: String) {
        self.problem = Some(problem);
    }

    /// Handles a key; true when the view should end.
    pub fn key(&mut self, key: KeyEvent) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return true;
        }
        if self.typing {
            match key.code {
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.typing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return false;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.sort = SortBy::Rate,
            KeyCode::Char('e') => self.sort = SortBy::Errors,
            KeyCode::Char('l') => self.sort = SortBy::P99,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('/') => self.typing = true,
            KeyCode::Char('c') => self.filter.clear(),
            _ => {}
        }
        false
    }

    /// The edges shown, filtered and sorted.
    fn rows(&self) -> Vec<&EdgeJson> {
        let Some(answer) = &self.answer else { return Vec::new() };
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&EdgeJson> = answer
            .edges
            .iter()
            .filter(|e| {
                filter.is_empty()
                    || e.from.to_lowercase().contains(&filter)
                    || e.to.to_lowercase().contains(&filter)
            })
            .collect();
        let p99 = |e: &EdgeJson| e.figures.latency_ms.as_ref().map_or(0.0, |l| l.p99);
        rows.sort_by(|a, b| {
            let order = match self.sort {
                SortBy::Rate => b.figures.rate_per_s.total_cmp(&a.figures.rate_per_s),
                SortBy::Errors => b.figures.error_ratio.total_cmp(&a.figures.error_ratio),
                SortBy::P99 => p99(b).total_cmp(&p99(a)),
            };
            order.then_with(|| key_of(a).cmp(&key_of(b)))
        });
        rows
    }

    fn coverage_line(&self) -> Line<'static> {
        let Some(answer) = &self.answer else {
            return Line::from(format!("waiting for {} …", self.peer));
        };
        let (text, colour) = match &answer.coverage.mesh {
            None => ("complete: a single peer".to_string(), Color::Green),
            Some(mesh) if mesh.complete && mesh.peers_known == 0 => {
                ("complete: no other peer known".to_string(), Color::Green)
            }
            Some(mesh) if mesh.complete => (
                format!("complete: {} of {} other peers in sync", mesh.peers_in_sync, mesh.peers_known),
                Color::Green,
            ),
            Some(mesh) => (
                format!(
                    "partial: {} of {} other peers in sync, {} connected",
                    mesh.peers_in_sync, mesh.peers_known, mesh.peers_connected
                ),
                Color::Yellow,
            ),
        };
        Line::from(vec![
            Span::styled(text, Style::default().fg(colour)),
            Span::raw(format!(
                " · {} · window {} to {} · {} edges",
                self.peer,
                answer.window.length,
                answer.window.end,
                answer.edges.len()
            )),
        ])
    }

    /// Draws the view into `frame`.
    pub fn draw(&self, frame: &mut Frame) {
        let [head, body, foot] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1)])
                .areas(frame.area());
        frame.render_widget(Paragraph::new(self.coverage_line()), head);
        let header = Row::new(["EDGE", "KIND", "RATE/S", "ERR%", "P50 MS", "P99 MS", "RATE, LAST SAMPLES"])
            .style(Style::default().add_modifier(Modifier::BOLD));
        let rows: Vec<Row> = self
            .rows()
            .into_iter()
            .map(|e| {
                let latency = e.figures.latency_ms.as_ref();
                let err_style = if e.figures.error_ratio >= 0.05 {
                    Style::default().fg(Color::Red)
                } else if e.figures.error_ratio >= 0.01 {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                };
                Row::new(vec![
                    Cell::from(format!("{} -> {}", e.from, e.to)),
                    Cell::from(match &e.virtual_node {
                        Some(_) => format!("{}, virtual", e.kind),
                        None => e.kind.clone(),
                    }),
                    Cell::from(format!("{:.2}", e.figures.rate_per_s)),
                    Cell::from(format!("{:.2}", e.figures.error_ratio * 100.0)).style(err_style),
                    Cell::from(latency.map_or("-".into(), |l| format!("{:.1}", l.p50))),
                    Cell::from(latency.map_or("-".into(), |l| format!("{:.1}", l.p99))),
                    Cell::from(sparkline(self.history.get(&key_of(e)))),
                ])
            })
            .collect();
        let widths = [
            Constraint::Min(24),
            Constraint::Length(18),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(HISTORY as u16 + 2),
        ];
        frame.render_widget(Table::new(rows, widths).header(header), body);
        let mut help = format!("q quit · s sort ({}) · / filter · p pause", self.sort.name());
        if self.typing || !self.filter.is_empty() {
            help.push_str(&format!(" · filter: {}{}", self.filter, if self.typing { "▏" } else { "" }));
        }
        if self.paused {
            help.push_str(" · PAUSED");
        }
        let mut spans = vec![Span::styled(help, Style::default().fg(Color::DarkGray))];
        if let Some(problem) = &self.problem {
            spans.push(Span::styled(format!(" · {problem}"), Style::default().fg(Color::Red)));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), foot);
    }
}

/// Eight levels of block characters, scaled to the history's own maximum.
fn sparkline(history: Option<&VecDeque<f64>>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(history) = history else { return String::new() };
    let top = history.iter().copied().fold(0.0, f64::max);
    history
        .iter()
        .map(|&v| if top <= 0.0 { BARS[0] } else { BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

/// Runs the view on the terminal until `q`, Esc, Ctrl-C, SIGTERM or SIGHUP.
pub fn run(peer: &str, window: &str, sort: SortBy, interval: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = Client::new(peer)?;
    let mut top = Top::new(peer, sort);
    // Checked before the terminal is taken over, so a bad peer or window is a plain error.
    top.update(runtime.block_on(client.graph(window, None))?.answer);
    // SIGTERM and SIGHUP end the view like q does, so the terminal is restored. The
    // watcher lives as long as the process; the loop looks at its flag every 250 ms.
    let signalled = Arc::new(AtomicBool::new(false));
    let watcher = signalled.clone();
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                });
                watcher.store(true, Ordering::SeqCst);
            }
        });
        Ok::<(), std::io::Error>(())
    })?;
    let mut terminal = ratatui::try_init()?;
    let outcome = (|| -> anyhow::Result<()> {
        let mut next_poll = Instant::now() + interval;
        loop {
            terminal.draw(|frame| top.draw(frame))?;
            if signalled.load(Ordering::SeqCst) {
                return Ok(());
            }
            let wait = next_poll.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
            if event::poll(wait)? {
                if let Event::Key(key) = event::read()?
                    && top.key(key)
                {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() < next_poll {
                continue;
            }
            next_poll = Instant::now() + interval;
            if top.paused() {
                continue;
            }
            // A peer that hangs must not freeze the keys: give up on a poll after a while.
            let poll = runtime
                .block_on(async { tokio::time::timeout(interval * 3, client.graph(window, None)).await });
            match poll {
                Ok(Ok(fetched)) => top.update(fetched.answer),
                Ok(Err(error)) => top.failed(error.to_string()),
                Err(_) => top.failed(format!("{peer} did not answer within {:?}", interval * 3)),
            }
        }
    })();
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::*;

    fn answer(rates: &[(&str, &str, f64, u64)]) -> GraphAnswer {
        let edges: Vec<serde_json::Value> = rates
            .iter()
            .map(|(from, to, rate, errors)| {
                serde_json::json!({
                    "from": from, "to": to, "kind": "request", "calls": 100, "errors": errors,
                    "error_ratio": *errors as f64 / 100.0, "rate_per_s": rate, "bytes": 0,
                    "latency_ms": {"p50": 4.0, "p90": 9.0, "p95": 10.0, "p99": 20.0 + *errors as f64, "max": 30.0, "mean": 5.0, "samples": 100}
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "window": {"length": "1m", "resolution": "10s", "from": "2026-12-02T10:00:00Z", "end": "2026-12-02T10:01:00Z", "to": "2026-12-02T10:01:00Z"},
            "nodes": [],
            "edges": edges,
            "coverage": {"origins": [], "mesh": {"peers_known": 2, "peers_connected": 1, "peers_in_sync": 1, "fresh_ms": 4000, "complete": false}}
        }))
        .expect("a graph answer")
    }

    fn screen(top: &Top) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(110, 12)).unwrap();
        terminal.draw(|frame| top.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>())
            .collect()
    }

    fn press(top: &mut Top, code: KeyCode) -> bool {
        top.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn edge_order(lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains(" -> "))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn the_view_sorts_filters_pauses_and_quits() {
        let mut top = Top::new("http://127.0.0.1:7070", SortBy::Rate);
        top.update(answer(&[
            ("web", "checkout", 10.0, 1),
            ("checkout", "payments", 2.0, 9),
            ("web", "auth", 5.0, 0),
        ]));
        top.update(answer(&[
            ("web", "checkout", 20.0, 1),
            ("checkout", "payments", 2.0, 9),
            ("web", "auth", 5.0, 0),
        ]));
        let lines = screen(&top);
        assert!(lines[0].starts_with("partial: 1 of 2 other peers in sync, 1 connected"), "{}", lines[0]);
        assert!(lines[0].contains("window 1m"), "{}", lines[0]);
        assert!(lines[1].contains("EDGE") && lines[1].contains("P99 MS"), "{}", lines[1]);
        assert_eq!(
            edge_order(&lines),
            ["web -> checkout", "web -> auth", "checkout -> payments"],
            "busiest first"
        );
        let web_checkout = lines.iter().find(|l| l.contains("web -> checkout")).unwrap();
        assert!(
            web_checkout.contains("20.00") && web_checkout.contains("▅█"),
            "rate and sparkline: {web_checkout}"
        );

        press(&mut top, KeyCode::Char('s'));
        assert_eq!(edge_order(&screen(&top))[0], "checkout -> payments", "worst errors first");
        press(&mut top, KeyCode::Char('l'));
        assert!(screen(&top).last().unwrap().contains("sort (p99)"));

        for c in "/auth".chars() {
            press(&mut top, KeyCode::Char(c));
        }
        press(&mut top, KeyCode::Enter);
        let filtered = screen(&top);
        assert_eq!(edge_order(&filtered), ["web -> auth"], "the filter keeps matching edges");
        assert!(filtered.last().unwrap().contains("filter: auth"));
        press(&mut top, KeyCode::Char('c'));

        press(&mut top, KeyCode::Char('p'));
        top.update(answer(&[("web", "new", 1.0, 0)]));
        assert!(!edge_order(&screen(&top)).contains(&"web -> new".to_string()), "paused: no update");
        assert!(screen(&top).last().unwrap().contains("PAUSED"));
        press(&mut top, KeyCode::Char('p'));
        top.update(answer(&[("web", "new", 1.0, 0)]));
        assert_eq!(edge_order(&screen(&top)), ["web -> new"]);

        top.failed("reading the graph: connection refused".into());
        assert!(
            screen(&top).last().unwrap().contains("connection refused"),
            "a failed poll is said, the table stays"
        );
        assert!(!press(&mut top, KeyCode::Char('x')));
        assert!(top.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), "Ctrl-C quits");
        assert!(press(&mut top, KeyCode::Char('q')), "q quits");
    }
}
