//! Structured logging: one line per event, in logfmt, on stderr.
//!
//! Every line carries a UTC timestamp, the level, the node id and the Raft term (when known),
//! the event name and its fields:
//!
//! ```text
//! ts=2026-11-27T06:30:00.123Z level=info node=1 term=3 event=became_leader voters=3
//! ```
//!
//! The level is read once from the `HAVEN_LOG` environment variable (`off`, `error`, `warn`,
//! `info`, `debug`, `trace`; default `info`) and can be changed with [`set_level`]. When a `log`
//! facade logger takes the level (the C ABI's callback), events go to it instead of stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Logging disabled.
    Off = 0,
    /// Something failed and needs an operator.
    Error = 1,
    /// Something unexpected that haven handled (a refused connection, a truncated WAL tail).
    Warn = 2,
    /// Normal but noteworthy events (elections, membership changes, snapshots).
    Info = 3,
    /// Detail useful when diagnosing.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// Parse a level name as accepted in `HAVEN_LOG`.
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static INIT: Once = Once::new();

fn init_from_env() {
    INIT.call_once(|| {
        if let Some(level) = std::env::var("HAVEN_LOG")
            .ok()
            .as_deref()
            .and_then(Level::parse)
        {
            LEVEL.store(level as u8, Ordering::Relaxed);
        }
    });
}

/// Set the level for the whole process (overrides `HAVEN_LOG`).
pub fn set_level(level: Level) {
    init_from_env();
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether lines at `level` are written.
pub fn enabled(level: Level) -> bool {
    init_from_env();
    level != Level::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Format a UTC timestamp with millisecond precision (no external time crate needed).
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Quote a field value if logfmt needs it.
fn push_value(line: &mut String, value: &str) {
    if !value.is_empty() && !value.contains([' ', '"', '=', '\n', '\t']) {
        line.push_str(value);
    } else {
        line.push('"');
        for c in value.chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                c => line.push(c),
            }
        }
        line.push('"');
    }
}

/// Build one log line (without the trailing newline).
pub fn format_line(
    now: SystemTime,
    level: Level,
    node: Option<u64>,
    term: Option<u64>,
    event: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) -> String {
    let mut line = String::with_capacity(128);
    let _ = write!(line, "ts={} level={}", timestamp(now), level.name());
    if let Some(node) = node {
        let _ = write!(line, " node={node}");
    }
    if let Some(term) = term {
        let _ = write!(line, " term={term}");
    }
    line.push_str(" event=");
    push_value(&mut line, event);
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        push_value(&mut line, &value.to_string());
    }
    line
}

/// Write one event line to stderr if `level` is enabled. Prefer the [`crate::event!`] macro.
pub fn write_event(
    level: Level,
    node: Option<u64>,
    term: Option<u64>,
    event: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) {
    if !enabled(level) {
        return;
    }
    let mut line = format_line(SystemTime::now(), level, node, term, event, fields);
    if to_facade(level, &line) {
        return;
    }
    line.push('\n');
    // One write call per line so lines from different threads do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Hand the line to the `log` facade when a facade logger takes this level (the C ABI's log
/// callback, see `ffi::log`); the host's logger adds its own timestamp, so `ts=` is left off.
fn to_facade(level: Level, line: &str) -> bool {
    let level = match level {
        Level::Off => return false,
        Level::Error => ::log::Level::Error,
        Level::Warn => ::log::Level::Warn,
        Level::Info => ::log::Level::Info,
        Level::Debug => ::log::Level::Debug,
        Level::Trace => ::log::Level::Trace,
    };
    if level > ::log::max_level() {
        return false;
    }
    let without_ts = line.split_once(' ').map_or(line, |(_, rest)| rest);
    ::log::logger().log(
        &::log::Record::builder()
            .level(level)
            .target("haven")
            .args(format_args!("{without_ts}"))
            .build(),
    );
    true
}

/// Log one structured event:
/// `event!(Level::Info, node: Some(1), term: Some(3), "became_leader", voters = 3)`.
#[macro_export]
macro_rules! event {
    ($level:expr, node: $node:expr, term: $term:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            $crate::log::write_event(
                $level,
                $node,
                $term,
                $event,
                &[$((stringify!($key), &$value as &dyn ::std::fmt::Display)),*],
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn line_has_node_term_event_and_quoted_fields() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_761_000_123);
        let line = format_line(
            at,
            Level::Warn,
            Some(2),
            Some(7),
            "peer_refused",
            &[("addr", &"127.0.0.1:7001"), ("reason", &"wrong secret")],
        );
        assert_eq!(
            line,
            "ts=2026-11-27T06:30:00.123Z level=warn node=2 term=7 event=peer_refused \
             addr=127.0.0.1:7001 reason=\"wrong secret\""
        );
    }

    #[test]
    fn timestamps_cross_leap_years() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap_day), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn level_names_parse() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Trace);
    }
}
