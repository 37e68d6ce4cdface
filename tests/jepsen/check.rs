//! The checks after a run, besides linearizability: the values read after the full restart
//! against those read just before it, and the members' state hashes.

use crate::history::{Action, Event, Kind};
use crate::lincheck::OpResult;
use std::collections::{BTreeMap, HashSet};

/// Values read per key (`None`: absent).
pub type Values = BTreeMap<u64, Option<u64>>;

/// Every key read before the full restart must read the same after it, unless the new value
/// is one that an operation with an unknown outcome tried to write and that nobody has seen
/// yet (such a write may take effect late; values are unique, so a value once seen and then
/// replaced can never come back). Any other difference is an acknowledged write lost (or a
/// value invented) across the restart.
///
/// `events` is the history up to the reads before the restart (not the reads after it).
pub fn check_restart_values(
    events: &[Event],
    before: &Values,
    after: &Values,
) -> Result<(), String> {
    // Values some completed operation saw in a key.
    let mut seen: HashSet<u64> = HashSet::new();
    // The values of writes and CASes that ended `info` or never ended.
    let mut unknown_writes: HashSet<u64> = HashSet::new();
    let mut open: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for event in events {
        let Event::Client {
            process,
            kind,
            action,
            ..
        } = event
        else {
            continue;
        };
        let written = match action {
            Action::Write(v) => Some(*v),
            Action::Cas { new, .. } => Some(*new),
            Action::Read => None,
        };
        match (kind, action) {
            (Kind::Ok(OpResult::Read(Some(v))), _) => {
                seen.insert(*v);
            }
            (Kind::Ok(OpResult::Cas(true)), Action::Cas { expected, .. }) => {
                seen.insert(*expected);
            }
            _ => {}
        }
        match kind {
            Kind::Invoke => {
                open.insert(*process, written);
            }
            Kind::Info => {
                open.remove(process);
                unknown_writes.extend(written);
            }
            Kind::Ok(_) | Kind::Fail => {
                open.remove(process);
            }
        }
    }
    unknown_writes.extend(open.values().flatten());

    let mut problems = Vec::new();
    for (key, value_before) in before {
        let Some(value_after) = after.get(key) else {
            problems.push(format!("key {key}: not read after the full restart"));
            continue;
        };
        if value_after == value_before {
            continue;
        }
        let explained =
            value_after.is_some_and(|v| unknown_writes.contains(&v) && !seen.contains(&v));
        if !explained {
            problems.push(format!(
                "key {key}: read {} before the full restart and {} after it (not a value of \
                 an unseen operation with an unknown outcome): a write was lost or a value \
                 appeared",
                show(*value_before),
                show(*value_after)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "nil".into(), |v| v.to_string())
}
