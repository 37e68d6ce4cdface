//! `haven watch PREFIX`: print every change of the keys under PREFIX as it happens, one line per
//! event, until `--count` events were printed (exit 0) or the watch ends.
//!
//! Text lines are `REVISION<TAB>put|delete<TAB>KEY<TAB>VALUE` (a delete has an empty value);
//! with `--json` one object per line: `{"revision":N,"type":"put","key":"...","value":"..."}`
//! (`value` is `null` for a delete). Keys and values are UTF-8 text, or lower-case hex with
//! `--hex`; without `--hex`, bytes that are not UTF-8 end the command with exit 2 (use
//! `--hex`). A watch the cluster ends (`Compacted`: it started before the oldest revision the
//! member keeps; `Overflow`: this command read too slowly) exits 1 with the reason on stderr;
//! failures use the shared exit codes (`exit.rs`).
//!
//! `haven watch --election NAME` watches an election instead: a line per change of its record,
//! type `leader` (the value is the leader's) or `no_leader` (no value); a campaigner joining or
//! leaving repeats the leader (`Client::observe` reports only changes).

use super::exit::{fail, Outcome, EXIT_NO};
use super::kv::{to_hex, ClusterArgs};
use haven::client::{EventKind, WatchEvent, WatchNotice, WatchSpec};
use haven::observe::json_string;
use haven::{Error, LogIndex, Result};
use std::io::Write;

/// `haven watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Watch every key starting with this (text, or hex with --hex; empty: every key).
    #[arg(required_unless_present = "election", conflicts_with = "election")]
    pub prefix: Option<String>,
    /// Watch this election's leader instead of keys.
    #[arg(long)]
    pub election: Option<String>,
    /// Deliver the changes at this revision and after (0: from now on). A revision older
    /// than the member keeps ends the watch at once (exit 1).
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
    /// Exit 0 after printing this many events (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Keys and values are hex (the prefix argument too).
    #[arg(long)]
    pub hex: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn text(bytes: &[u8], hex: bool) -> Result<String> {
    if hex {
        return Ok(to_hex(bytes));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Error::InvalidArgument(format!(
            "{} bytes that are not UTF-8 text; use --hex",
            bytes.len()
        ))
    })
}

/// One output line for `event`.
pub fn line(event: &WatchEvent, json: bool, hex: bool) -> Result<String> {
    let kind = match event.kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
        EventKind::Leader { .. } => "leader",
        EventKind::NoLeader => "no_leader",
        EventKind::MapEpoch { .. } => "map_epoch",
    };
    let key = text(&event.key, hex)?;
    let value = match event.kind {
        EventKind::Put | EventKind::Leader { .. } => Some(text(&event.value, hex)?),
        EventKind::Delete | EventKind::NoLeader | EventKind::MapEpoch { .. } => None,
    };
    Ok(if json {
        format!(
            "{{\"revision\":{},\"type\":\"{kind}\",\"key\":{},\"value\":{}}}",
            event.revision.0,
            json_string(&key),
            value.as_deref().map_or_else(|| "null".into(), json_string)
        )
    } else {
        format!(
            "{}\t{kind}\t{key}\t{}",
            event.revision.0,
            value.unwrap_or_default()
        )
    })
}

/// Run `haven watch`.
pub fn run(args: &WatchArgs) -> Outcome {
    if args.count == Some(0) {
        return Ok(());
    }
    let from = LogIndex(args.from_revision);
    let spec = match (&args.election, &args.prefix) {
        (Some(name), _) => WatchSpec::election(name.as_bytes(), from),
        (None, Some(prefix)) if args.hex => {
            WatchSpec::prefix(&super::kv::from_hex(prefix).map_err(fail)?, from)
        }
        (None, prefix) => WatchSpec::prefix(prefix.as_deref().unwrap_or("").as_bytes(), from),
    };
    let client = args.cluster.connect().map_err(fail)?;
    let watch = client.watch(spec).map_err(fail)?;
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    for notice in watch {
        match notice.map_err(fail)? {
            WatchNotice::Events { events, .. } => {
                for event in &events {
                    let line = line(event, args.json, args.hex).map_err(fail)?;
                    writeln!(out, "{line}")
                        .and_then(|()| out.flush())
                        .map_err(|e| fail(Error::io("writing to stdout", e)))?;
                    printed += 1;
                    if args.count == Some(printed) {
                        return Ok(());
                    }
                }
            }
            WatchNotice::Progress { .. } => {}
            WatchNotice::Compacted { oldest } => {
                return Err((
                    EXIT_NO,
                    format!(
                        "the watch ended: revision {} is older than the oldest the member \
                         keeps ({oldest}); read again and watch from the read's revision + 1",
                        args.from_revision
                    ),
                ))
            }
            WatchNotice::Overflow => {
                return Err((
                    EXIT_NO,
                    "the watch ended: it fell further behind than the member buffers".into(),
                ))
            }
        }
    }
    Err(fail(Error::Unavailable("the watch ended".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_text_and_json() {
        let put = WatchEvent {
            revision: LogIndex(12),
            kind: EventKind::Put,
            key: b"a/\"b".to_vec(),
            value: b"v\n".to_vec(),
            meta: None,
            prev_value: None,
        };
        assert_eq!(line(&put, false, false).unwrap(), "12\tput\ta/\"b\tv\n");
        assert_eq!(
            line(&put, true, false).unwrap(),
            r#"{"revision":12,"type":"put","key":"a/\"b","value":"v\n"}"#
        );
        assert_eq!(
            line(&put, true, true).unwrap(),
            r#"{"revision":12,"type":"put","key":"612f2262","value":"760a"}"#
        );
        let delete = WatchEvent {
            kind: EventKind::Delete,
            value: Vec::new(),
            ..put.clone()
        };
        assert_eq!(
            line(&delete, true, false).unwrap(),
            r#"{"revision":12,"type":"delete","key":"a/\"b","value":null}"#
        );
        let binary = WatchEvent {
            value: vec![0xff],
            ..put
        };
        assert_eq!(
            line(&binary, false, false).unwrap_err().code(),
            haven::ErrorCode::InvalidArgument
        );
    }
}
