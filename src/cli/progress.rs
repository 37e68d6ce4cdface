//! Progress on stderr, never on stdout (stdout carries the story or the results). On a terminal
//! an `indicatif` bar redrawn in place; otherwise (a pipe, a log file) the demo's writes print a
//! plain line at each quarter so the file stays readable, and the benches, whose results follow
//! on stdout anyway, print nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// What to do when stderr is not a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// A line at each quarter of the total: `  LABEL DONE/TOTAL (RATE/s)`.
    QuarterLines,
    /// Nothing.
    Silent,
}

/// A count of `total` things done, shown as it grows.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    plain: Plain,
    shown_quarter: u64,
    started: Instant,
}

impl Progress {
    /// Progress of `total` things (writes, phases), rated per second.
    pub fn new(label: &'static str, total: u64, plain: Plain) -> Progress {
        let total = total.max(1);
        let bar = std::io::stderr().is_terminal().then(|| {
            let style =
                ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} ({rate}) {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key(
                        "rate",
                        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0}/s", state.per_sec());
                        },
                    )
                    .progress_chars("#.");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(label);
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            label,
            total,
            plain,
            shown_quarter: 0,
            started: Instant::now(),
        }
    }

    /// `done` things are done; `what` names the one under way (shown on the bar only).
    pub fn set(&mut self, done: u64, what: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(what.to_string());
            }
            None if self.plain == Plain::QuarterLines => {
                let quarter = done * 4 / self.total;
                if quarter > self.shown_quarter {
                    self.shown_quarter = quarter;
                    let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!("  {} {done}/{} ({rate:.0}/s)", self.label, self.total);
                }
            }
            None => {}
        }
    }

    /// The last update: the bar stays on screen with its final count.
    pub fn finish(mut self, done: u64) {
        self.set(done, "");
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
