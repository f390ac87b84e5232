//! The colours and font of every picture the observatory draws: the page, the SVG graph
//! and the simulator's `convergence.svg`, so that they look like one thing.

/// Meets its objectives.
pub const GOOD: &str = "#2f9e44";
/// Pending or over a warning threshold.
pub const WARN: &str = "#e8890c";
/// Firing or over a bad threshold.
pub const BAD: &str = "#e03131";
/// No traffic to judge by.
pub const IDLE: &str = "#868e96";
/// Text.
pub const INK: &str = "#212529";
/// Secondary text.
pub const MUTED: &str = "#5c636a";
/// Grid lines and rules.
pub const RULE: &str = "#dee2e6";
/// Background.
pub const PAPER: &str = "#ffffff";
/// An accent for lines that carry no health (charts).
pub const ACCENT: &str = "#1971c2";
/// The font stack.
pub const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
