//! `haven elect NAME VALUE` and `haven leader NAME`: elections for applications from the shell.
//!
//! `haven elect` grants a session (kept alive by this process), campaigns, and once it leads
//! prints the leadership's fencing token as a decimal number on stdout, holds the leadership
//! for `--hold-ms` or until stdin closes, resigns and exits 0. It waits as long as it takes to
//! lead (campaigners lead in turn); a leadership is held only while this process keeps its
//! session alive (a paused or killed leader loses it after the session's TTL, and the next
//! campaigner leads with a larger token).
//!
//! `haven leader NAME` prints `VALUE<TAB>TOKEN<TAB>SESSION` (the value as UTF-8 text, or hex
//! with `--hex`), or with `--json` one object `{"name":..,"value":..,"token":N,"session":N}`;
//! when nobody leads it prints nothing (`{"name":..,"leader":null}` with `--json`) and exits 1.
//! `haven leader transfer ID` is the other command of that name (it moves the cluster's own
//! leadership): an election named `transfer` is read with the options first and
//! `--` before its name: `haven leader --cluster ... --secret-file ... -- transfer`.

use super::exit::{fail, Outcome, EXIT_NO, EXIT_USAGE};
use super::kv::{to_hex, ClusterArgs};
use super::lock::hold;
use super::member::LeaderCommand;
use haven::client::{ElectionLeader, SessionState};
use haven::observe::json_string;
use haven::{Error, Result};
use std::io::Write;
use std::time::Duration;

/// `haven elect NAME VALUE`.
#[derive(clap::Args, Debug)]
pub struct ElectArgs {
    /// The election's name (text).
    pub name: String,
    /// The value to publish while leading (text).
    pub value: String,
    /// Lead this many milliseconds, then resign; default: until stdin closes.
    #[arg(long)]
    pub hold_ms: Option<u64>,
    /// The TTL of the session the leadership is held through, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub ttl_ms: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven leader NAME`, or `haven leader transfer ID`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LeaderArgs {
    /// Move the cluster's own leadership (`haven leader transfer ID`).
    #[command(subcommand)]
    pub action: Option<LeaderCommand>,
    /// The election whose leader to print (one named `transfer`: options first, then `--
    /// transfer`).
    pub name: Option<String>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print the value as hex.
    #[arg(long)]
    pub hex: bool,
    #[command(flatten)]
    pub cluster: Option<ClusterArgs>,
}

fn print(line: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| fail(Error::io("writing to stdout", e)))
}

/// `haven elect NAME VALUE`.
pub fn elect(args: &ElectArgs) -> Outcome {
    if args.name.is_empty() {
        return Err(fail(Error::InvalidArgument(
            "the election name is empty".into(),
        )));
    }
    let client = args.cluster.connect().map_err(fail)?;
    let session = client
        .grant_session(Duration::from_millis(args.ttl_ms))
        .map_err(fail)?;
    let leadership = client
        .campaign(args.name.as_bytes(), args.value.as_bytes(), &session)
        .map_err(fail)?;
    print(&leadership.token().to_string())?;
    hold(args.hold_ms);
    if session.state() == SessionState::Lost {
        return Err(fail(Error::SessionExpired(format!(
            "the session of election {:?} ended while it led: the next campaigner leads",
            args.name
        ))));
    }
    leadership.resign().map_err(fail)?;
    let _ = session.revoke();
    Ok(())
}

fn value_text(value: &[u8], hex: bool) -> Result<String> {
    if hex {
        return Ok(to_hex(value));
    }
    String::from_utf8(value.to_vec()).map_err(|_| {
        Error::InvalidArgument("the leader's value is not UTF-8 text; use --hex".into())
    })
}

/// The output of `haven leader NAME`.
pub fn leader_line(
    name: &str,
    leader: Option<&ElectionLeader>,
    json: bool,
    hex: bool,
) -> Result<Option<String>> {
    Ok(match (leader, json) {
        (None, true) => Some(format!(
            "{{\"name\":{},\"leader\":null}}",
            json_string(name)
        )),
        (None, false) => None,
        (Some(l), true) => Some(format!(
            "{{\"name\":{},\"value\":{},\"token\":{},\"session\":{}}}",
            json_string(name),
            json_string(&value_text(&l.value, hex)?),
            l.token,
            l.session
        )),
        (Some(l), false) => Some(format!(
            "{}\t{}\t{}",
            value_text(&l.value, hex)?,
            l.token,
            l.session
        )),
    })
}

/// `haven leader NAME` or `haven leader transfer ID`.
pub fn leader(args: &LeaderArgs) -> Outcome {
    if let Some(action) = &args.action {
        return super::member::run_leader(action);
    }
    let (Some(name), Some(cluster)) = (&args.name, &args.cluster) else {
        return Err((
            EXIT_USAGE,
            "usage: haven leader NAME --cluster ... --secret-file ... (or haven leader \
             transfer ID ...)"
                .into(),
        ));
    };
    let client = cluster.connect().map_err(fail)?;
    let leader = client.leader(name.as_bytes()).map_err(fail)?;
    if let Some(line) = leader_line(name, leader.as_ref(), args.json, args.hex).map_err(fail)? {
        print(&line)?;
    }
    match leader {
        Some(_) => Ok(()),
        None => Err((EXIT_NO, format!("nobody leads election {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven::sm::{FencingToken, SessionId};

    #[test]
    fn leader_lines_in_text_and_json() {
        let l = ElectionLeader {
            value: b"host:1\"".to_vec(),
            token: FencingToken(42),
            session: SessionId(7),
        };
        assert_eq!(
            leader_line("e", Some(&l), false, false).unwrap().unwrap(),
            "host:1\"\t42\t7"
        );
        assert_eq!(
            leader_line("e", Some(&l), true, false).unwrap().unwrap(),
            r#"{"name":"e","value":"host:1\"","token":42,"session":7}"#
        );
        assert_eq!(
            leader_line("e", Some(&l), false, true).unwrap().unwrap(),
            "686f73743a3122\t42\t7"
        );
        assert_eq!(leader_line("e", None, false, false).unwrap(), None);
        assert_eq!(
            leader_line("e", None, true, false).unwrap().unwrap(),
            r#"{"name":"e","leader":null}"#
        );
        let binary = ElectionLeader {
            value: vec![0xff],
            ..l
        };
        assert!(leader_line("e", Some(&binary), false, false).is_err());
    }
}
