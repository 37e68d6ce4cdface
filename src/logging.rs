//! haven's events, through the [`log`] facade.
//!
//! haven is a library: it writes nothing to the host's stderr on its own. Every event (an
//! election won, a snapshot taken, a refused connection) is a [`log::Record`] whose message is
//! the event's name and whose key-values (the `log` crate's `kv` feature) are the node id, the
//! Raft term when known, and the event's fields. An embedding program's logger receives them
//! with their fields: `env_logger`, a journald or JSON sink, or `tracing-subscriber` through
//! `tracing-log`. With no logger installed the events cost one relaxed atomic load each.
//! Targets are module paths (`haven::node::driver`, `haven::net::peer`, ...), so loggers can
//! filter by layer.
//!
//! The `haven` binary installs [`LogfmtLogger`]: one logfmt line per event on stderr, the level
//! chosen by `HAVEN_LOG` (`off`, `error`, `warn`, `info`, `debug`, `trace`; default `info`):
//!
//! ```text
//! ts=2026-11-27T06:30:00.123Z level=info node=1 term=3 event=became_leader voters=3
//! ```
//!
//! Inside haven, events are written with [`crate::event!`]:
//! `event!(Level::Info, node: Some(1), term: Some(3), "became_leader", voters = 3)`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{self, Key, Value, VisitSource};
pub use log::{Level, LevelFilter};

/// The key-value key of the node id.
pub const NODE_KEY: &str = "node";
/// The key-value key of the Raft term.
pub const TERM_KEY: &str = "term";

/// Parse a level name as accepted in `HAVEN_LOG` (`none` and `warning` are accepted too).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

/// The lowercase name logfmt lines carry.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
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
    let _ = write!(line, "ts={} ", timestamp(now));
    push_event(&mut line, level, node, term, event, fields);
    line
}

/// The line after its timestamp: `level=.. node=.. term=.. event=.. key=value ...`.
fn push_event(
    line: &mut String,
    level: Level,
    node: Option<u64>,
    term: Option<u64>,
    event: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) {
    let _ = write!(line, "level={}", level_name(level));
    if let Some(node) = node {
        let _ = write!(line, " node={node}");
    }
    if let Some(term) = term {
        let _ = write!(line, " term={term}");
    }
    line.push_str(" event=");
    push_value(line, event);
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        push_value(line, &value.to_string());
    }
}

/// One haven event as a logger sees it: a [`log::Record`] taken apart into the node id and
/// term (when the record carries them), the event name (the record's message) and the other
/// key-values in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// How important it is.
    pub level: Level,
    /// The member that logged it.
    pub node: Option<u64>,
    /// Its Raft term, when known.
    pub term: Option<u64>,
    /// The event name (`became_leader`), or the message of a record that is not a haven event.
    pub name: String,
    /// The remaining key-values, rendered with `Display`.
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// Take a record apart.
    pub fn from_record(record: &log::Record<'_>) -> Event {
        let mut event = Event {
            level: record.level(),
            node: None,
            term: None,
            name: record.args().to_string(),
            fields: Vec::new(),
        };
        // A source that fails to visit leaves the fields it gave; logging never fails a caller.
        let _ = record.key_values().visit(&mut Collect(&mut event));
        event
    }

    /// The event as one logfmt line without a timestamp (`level=info node=1 term=3
    /// event=became_leader voters=3`), for sinks that stamp their own time (the C ABI's log
    /// callback).
    pub fn to_logfmt(&self) -> String {
        let fields: Vec<(&str, &dyn fmt::Display)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v as &dyn fmt::Display))
            .collect();
        let mut line = String::with_capacity(128);
        push_event(
            &mut line, self.level, self.node, self.term, &self.name, &fields,
        );
        line
    }

    /// The value of the first field named `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

struct Collect<'e>(&'e mut Event);

impl<'kvs> VisitSource<'kvs> for Collect<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let slot = match key.as_str() {
            NODE_KEY => &mut self.0.node,
            TERM_KEY => &mut self.0.term,
            _ => &mut None,
        };
        match value.to_u64() {
            Some(n) if slot.is_none() && matches!(key.as_str(), NODE_KEY | TERM_KEY) => {
                *slot = Some(n);
            }
            _ => self
                .0
                .fields
                .push((key.as_str().to_string(), value.to_string())),
        }
        Ok(())
    }
}

/// Whether a record comes from haven (the library or the `haven` binary): targets are module
/// paths, and both crates are named `haven`.
pub(crate) fn is_haven(target: &str) -> bool {
    target == "haven" || target.starts_with("haven::")
}

/// A [`log::Log`] that writes haven's events as logfmt lines on stderr, one `write` per line
/// so that lines from different threads do not interleave. Records from other crates (sled
/// logs through the same facade) are not written: the lines are haven's.
#[derive(Debug)]
pub struct LogfmtLogger {
    level: LevelFilter,
}

impl LogfmtLogger {
    /// Write events at `level` and more important ones.
    pub fn new(level: LevelFilter) -> LogfmtLogger {
        LogfmtLogger { level }
    }

    /// The level named by `HAVEN_LOG`, or `default` when it is unset or not a level name.
    pub fn from_env(default: LevelFilter) -> LogfmtLogger {
        let level = std::env::var("HAVEN_LOG")
            .ok()
            .as_deref()
            .and_then(parse_level)
            .unwrap_or(default);
        LogfmtLogger::new(level)
    }

    /// Make this the process's logger (possible once per process; later calls fail and change
    /// nothing).
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        log::set_logger(Box::leak(Box::new(self)))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl log::Log for LogfmtLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level && is_haven(metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let event = Event::from_record(record);
        let fields: Vec<(&str, &dyn fmt::Display)> = event
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v as &dyn fmt::Display))
            .collect();
        let mut line = format_line(
            SystemTime::now(),
            event.level,
            event.node,
            event.term,
            &event.name,
            &fields,
        );
        line.push('\n');
        // One write call per line so lines from different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// What [`crate::event!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Whether a logger wants this event (one relaxed load when none is installed).
    #[inline]
    pub fn enabled(level: Level, target: &'static str) -> bool {
        level <= log::max_level()
            && log::logger().enabled(&log::Metadata::builder().level(level).target(target).build())
    }

    /// The key-values of one event: node, term, then its fields.
    pub(super) struct Fields<'a> {
        pub(super) node: Option<u64>,
        pub(super) term: Option<u64>,
        pub(super) fields: &'a [(&'a str, &'a dyn fmt::Display)],
    }

    impl kv::Source for Fields<'_> {
        fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
            if let Some(node) = self.node {
                visitor.visit_pair(Key::from_str(NODE_KEY), Value::from(node))?;
            }
            if let Some(term) = self.term {
                visitor.visit_pair(Key::from_str(TERM_KEY), Value::from(term))?;
            }
            for (key, value) in self.fields {
                visitor.visit_pair(Key::from_str(key), Value::from_dyn_display(*value))?;
            }
            Ok(())
        }
    }

    /// Hand one event to the installed logger.
    #[allow(clippy::too_many_arguments)] // the macro's call site, spelled out once
    pub fn emit(
        level: Level,
        target: &'static str,
        file: &'static str,
        line: u32,
        node: Option<u64>,
        term: Option<u64>,
        event: &str,
        fields: &[(&str, &dyn fmt::Display)],
    ) {
        let source = Fields { node, term, fields };
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .module_path_static(Some(target))
                .file_static(Some(file))
                .line(Some(line))
                .args(format_args!("{event}"))
                .key_values(&source)
                .build(),
        );
    }
}

/// Log one structured event through the [`log`] facade:
/// `event!(Level::Info, node: Some(1), term: Some(3), "became_leader", voters = 3)`.
/// The target is the caller's module path; nothing is evaluated unless a logger wants it.
#[macro_export]
macro_rules! event {
    ($level:expr, node: $node:expr, term: $term:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {{
        let level: $crate::logging::Level = $level;
        if $crate::logging::__private::enabled(level, ::core::module_path!()) {
            $crate::logging::__private::emit(
                level,
                ::core::module_path!(),
                ::core::file!(),
                ::core::line!(),
                $node,
                $term,
                $event,
                &[$((::core::stringify!($key), &$value as &dyn ::core::fmt::Display)),*],
            );
        }
    }};
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
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("loud"), None);
        assert!(LevelFilter::Error < LevelFilter::Trace);
    }

    /// The logfmt logger (and any other) gets node, term and fields back out of the record
    /// that `event!` builds, in the order they were written.
    #[test]
    fn records_carry_node_term_and_fields_as_key_values() {
        let fields: [(&str, &dyn fmt::Display); 2] = [("voters", &3), ("reason", &"won vote")];
        let source = __private::Fields {
            node: Some(1),
            term: Some(3),
            fields: &fields,
        };
        let record = log::Record::builder()
            .level(Level::Info)
            .target("haven::node::driver")
            .args(format_args!("became_leader"))
            .key_values(&source)
            .build();
        let event = Event::from_record(&record);
        assert_eq!(event.level, Level::Info);
        assert_eq!((event.node, event.term), (Some(1), Some(3)));
        assert_eq!(event.name, "became_leader");
        assert_eq!(
            event.fields,
            vec![
                ("voters".to_string(), "3".to_string()),
                ("reason".to_string(), "won vote".to_string())
            ]
        );
        assert_eq!(event.field("reason"), Some("won vote"));
    }

    #[test]
    fn logfmt_logger_writes_only_haven_records_at_its_level() {
        use log::Log as _;
        let logger = LogfmtLogger::new(LevelFilter::Warn);
        let meta = |level, target| log::Metadata::builder().level(level).target(target).build();
        assert!(logger.enabled(&meta(Level::Warn, "haven::net::peer")));
        assert!(logger.enabled(&meta(Level::Error, "haven")));
        assert!(!logger.enabled(&meta(Level::Info, "haven::node")));
        assert!(!logger.enabled(&meta(Level::Error, "sled::pagecache")));
        assert!(!logger.enabled(&meta(Level::Error, "havens_neighbour")));
    }
}
