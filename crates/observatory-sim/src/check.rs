//! The invariants, checked against the oracle's truth.
//!
//! - `exact_after_quiescence`: at the end, every up peer's global view equals, cell by
//!   cell, the sum of what every origin wrote and did not lose by design.
//! - `never_exceeds_truth`: no cell of any peer's global view is above the truth
//!   (nothing counted twice); sampled during the run and checked for all at the end.
//! - `version_vectors_honest`: a peer that claims seq `s` of an origin holds every cell
//!   that origin had changed by `s`, and every cell it holds is a version the origin wrote.
//! - `settings_isolated`: no peer holds an origin written with other settings.
//! - `nothing_lost`: events go missing only where the scenario loses them by design:
//!   origins of a peer that lost its disk or crashed under `ack: accepted` (and origins
//!   whose writer was already gone at that moment), and of peers down at the end.

use std::collections::BTreeMap;

use observatory_core::{CellData, CellKey, FlowState, Origin};
use serde::Serialize;

use crate::sim::Simulation;

/// Invariants, in the order they are reported.
pub const INVARIANTS: [&str; 5] = [
    "exact_after_quiescence",
    "never_exceeds_truth",
    "version_vectors_honest",
    "settings_isolated",
    "nothing_lost",
];

/// One breach of an invariant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// Simulated seconds since the start.
    pub at_s: f64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What was found, naming the peer, origin and cell.
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { at_s: 0.0, invariant, detail }
}

fn describe_key(sim: &Simulation, group: usize, key: &CellKey) -> String {
    let resolution = sim.truth[group]
        .settings()
        .resolutions()
        .get(usize::from(key.resolution))
        .map_or("?", |r| r.name.as_str());
    format!("{} -> {} [{resolution} @ {}]", key.edge.from, key.edge.to, key.bucket_start_ms)
}

fn describe_data(data: &CellData) -> String {
    format!(
        "calls {}, errors {}, bytes {}, latencies {}",
        data.calls,
        data.errors,
        data.bytes,
        data.latency.len()
    )
}

/// Checks one up peer against the truth (every invariant but the end's exactness).
pub(crate) fn peer_violations(sim: &Simulation, ix: usize) -> Vec<Violation> {
    let peer = &sim.peers[ix];
    let group = peer.group;
    let truth = &sim.truth[group];
    let mut found = Vec::new();

    // Nothing counted twice: the global view never exceeds the truth's.
    let mut exceeding: Vec<(CellKey, String)> = peer
        .state
        .global_cells()
        .filter_map(|(key, data)| match truth.global_cell(&key) {
            None => Some((key, format!("holds {} where nothing was written", describe_data(data)))),
            Some(true_data) => true_data
                .check_contains(data)
                .err()
                .map(|e| (key, format!("{} above the truth ({e})", describe_data(data)))),
        })
        .collect();
    exceeding.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((key, what)) = exceeding.first() {
        found.push(violation(
            "never_exceeds_truth",
            format!(
                "peer p{ix}: global cell {} {what} ({} such cells)",
                describe_key(sim, group, key),
                exceeding.len()
            ),
        ));
    }

    let mut dishonest = Vec::new();
    let mut foreign = Vec::new();
    for coverage in peer.state.coverage() {
        let origin = &coverage.origin;
        match sim.origin_writer.get(origin) {
            Some(&(_, origin_group)) if origin_group != group => {
                foreign.push(format!("peer p{ix} holds origin {origin}, written with other settings"));
                continue;
            }
            None => {
                dishonest.push(format!("peer p{ix} holds origin {origin}, which no peer ever was"));
                continue;
            }
            _ => {}
        }
        if let Some(problem) = origin_problem(truth, &peer.state, origin, coverage.seq) {
            dishonest.push(format!("peer p{ix}, origin {origin}: {problem}"));
        }
    }
    dishonest.sort();
    foreign.sort();
    if let Some(first) = dishonest.first() {
        found.push(violation("version_vectors_honest", first.clone()));
    }
    if let Some(first) = foreign.first() {
        found.push(violation("settings_isolated", first.clone()));
    }
    found
}

/// What is wrong with a peer's copy of one origin claiming `seq`, if anything.
fn origin_problem(truth: &FlowState, state: &FlowState, origin: &Origin, seq: u64) -> Option<String> {
    let true_seq = truth.origin_seq(origin);
    if seq > true_seq {
        return Some(format!("claims seq {seq}, but the origin only reached {true_seq}"));
    }
    let mut problems = Vec::new();
    for (key, true_cell) in truth.origin_cells(origin) {
        if true_cell.seq > seq {
            continue;
        }
        match state.cell(origin, key) {
            None => problems
                .push(format!("claims seq {seq} but lacks cell {:?} changed at seq {}", key, true_cell.seq)),
            Some(cell) if cell.seq < true_cell.seq => problems.push(format!(
                "claims seq {seq} but holds cell {:?} at seq {} (changed at seq {})",
                key, cell.seq, true_cell.seq
            )),
            Some(_) => {}
        }
    }
    for (key, cell) in state.origin_cells(origin) {
        match truth.cell(origin, key) {
            None => problems.push(format!("holds cell {key:?} the origin never wrote")),
            Some(true_cell) if cell.seq > true_cell.seq => problems.push(format!(
                "holds cell {key:?} at seq {}, above the origin's {}",
                cell.seq, true_cell.seq
            )),
            Some(true_cell) if cell.seq == true_cell.seq && cell.data != true_cell.data => problems
                .push(format!("holds cell {key:?} at seq {} with other figures than the origin's", cell.seq)),
            Some(true_cell) => {
                if let Err(e) = true_cell.data.check_contains(&cell.data) {
                    problems.push(format!("holds cell {key:?} at seq {} above the origin's: {e}", cell.seq));
                }
            }
        }
    }
    problems.sort();
    problems.into_iter().next()
}

/// What the end of a run found.
#[derive(Debug)]
pub(crate) struct FinalOutcome {
    /// Violations of exactness and of `nothing_lost`.
    pub(crate) violations: Vec<Violation>,
    /// Events (calls) written by origins but held by no up peer at the end.
    pub(crate) events_lost: u64,
    /// Why losing them was allowed, if it was.
    pub(crate) loss_reason: Option<String>,
}

/// The `total` resolution's index, where every call of a cell's edge is counted once.
fn total_resolution(state: &FlowState) -> u8 {
    state.settings().resolutions().iter().position(|r| r.width_ms.is_none()).expect("settings hold `total`")
        as u8
}

fn calls_of(state: &FlowState, origin: &Origin) -> u64 {
    let total = total_resolution(state);
    state.origin_cells(origin).filter(|(k, _)| k.resolution == total).map(|(_, c)| c.data.calls).sum()
}

/// The state a converged peer of `group` holds: the truth, where an origin's writer is up;
/// otherwise the union of what the up peers hold of it (the rest is lost).
fn expected_state(sim: &Simulation, group: usize) -> FlowState {
    let truth = &sim.truth[group];
    let mut expected = FlowState::new(truth.settings().clone(), truth.limits().clone());
    let up: Vec<&FlowState> =
        sim.peers.iter().filter(|p| p.up && p.group == group).map(|p| &p.state).collect();
    for coverage in truth.coverage() {
        let origin = coverage.origin;
        let (seq, cells) = if sim.writer_up(&origin) {
            (
                coverage.seq,
                truth.origin_cells(&origin).map(|(k, c)| (k.clone(), c.clone())).collect::<Vec<_>>(),
            )
        } else {
            let seq = up.iter().map(|s| s.origin_seq(&origin)).max().unwrap_or(0);
            let mut union: BTreeMap<CellKey, observatory_core::Cell> = BTreeMap::new();
            for state in &up {
                for (key, cell) in state.origin_cells(&origin) {
                    if union.get(key).is_none_or(|held| held.seq < cell.seq) {
                        union.insert(key.clone(), cell.clone());
                    }
                }
            }
            (seq, union.into_iter().collect())
        };
        if seq > 0 || !cells.is_empty() {
            expected
                .restore_origin(origin, seq, coverage.changed_at_ms, cells)
                .expect("copies of the truth are consistent");
        }
    }
    expected
}

/// The first difference between a peer's global view and the expected one.
fn view_difference(
    sim: &Simulation,
    group: usize,
    state: &FlowState,
    expected: &FlowState,
) -> Option<String> {
    let mut differences: Vec<(CellKey, String)> = expected
        .global_cells()
        .filter_map(|(key, want)| match state.global_cell(&key) {
            Some(have) if have == want => None,
            Some(have) => Some((key, format!("{} instead of {}", describe_data(have), describe_data(want)))),
            None => Some((key, format!("missing ({})", describe_data(want)))),
        })
        .collect();
    differences.extend(
        state
            .global_cells()
            .filter(|(key, _)| expected.global_cell(key).is_none())
            .map(|(key, have)| (key, format!("{} where none is expected", describe_data(have)))),
    );
    differences.sort_by(|a, b| a.0.cmp(&b.0));
    let count = differences.len();
    differences.into_iter().next().map(|(key, what)| {
        format!("global cell {}: {what} ({count} cells differ)", describe_key(sim, group, &key))
    })
}

/// Exactness and loss, at the end of the run.
pub(crate) fn final_checks(sim: &Simulation) -> FinalOutcome {
    let mut violations = Vec::new();
    let mut events_lost = 0;
    let mut lost_unexpectedly: Vec<String> = Vec::new();
    let down = sim.peers_down_at_end();
    for group in 0..sim.truth.len() {
        let expected = expected_state(sim, group);
        for coverage in sim.truth[group].coverage() {
            let origin = &coverage.origin;
            let lost = calls_of(&sim.truth[group], origin).saturating_sub(calls_of(&expected, origin));
            events_lost += lost;
            let writer_down_at_end =
                sim.origin_writer.get(origin).is_some_and(|&(ix, _)| down.contains(&(ix as usize)));
            if lost > 0 && !sim.lossy_origins.contains(origin) && !writer_down_at_end {
                lost_unexpectedly.push(format!("{lost} events of origin {origin}"));
            }
        }
        let mut inexact: Vec<String> = Vec::new();
        for (ix, peer) in sim.peers.iter().enumerate() {
            if !peer.up || peer.group != group {
                continue;
            }
            if let Some(difference) = view_difference(sim, group, &peer.state, &expected) {
                inexact.push(format!("peer p{ix}: {difference}"));
            } else if peer.state.version_vector() != expected.version_vector() {
                inexact.push(format!("peer p{ix}: its version vector differs from the expected one"));
            }
        }
        if let Some(first) = inexact.first() {
            let more = if inexact.len() > 1 {
                format!(" (and {} more peers)", inexact.len() - 1)
            } else {
                String::new()
            };
            violations.push(violation("exact_after_quiescence", format!("{first}{more}")));
        }
    }
    let loss_reason = sim.scenario().loss_reason().map(str::to_string).or_else(|| {
        (!down.is_empty())
            .then(|| format!("{} peers were down at the end with what only they held", down.len()))
    });
    if let Some(first) = lost_unexpectedly.first() {
        violations.push(violation(
            "nothing_lost",
            format!(
                "{first} are held by no up peer, though no fault of the scenario loses them ({} origins lost events)",
                lost_unexpectedly.len()
            ),
        ));
    }
    FinalOutcome { violations, events_lost, loss_reason }
}
