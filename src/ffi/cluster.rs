//! Cluster functions: status and membership.

use super::args::{self, handle, text};
use super::{entry, haven_buf_t, json};
use crate::NodeId;
use std::ffi::{c_char, c_int};

/// The status of the member behind `h` (this process's member, or the member a remote client
/// talks to) as one JSON object in `*out` (UTF-8, not NUL-terminated; free with
/// `haven_buf_free`):
///
/// `{"id", "role" ("follower", "pre_candidate", "candidate", "leader", "stopped"), "term",
/// "leader" (id or null), "commit_index", "applied_index", "first_index", "last_index",
/// "members": [{"id", "address", "voter", "match_index", "last_contact_ms"}], "counters":
/// {...}, "failure" (null, or why a storage failure stopped the member)}`. Fields are only
/// added in later versions.
///
/// Blocks for one request to the member. Errors: INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT.
/// Thread safe.
#[no_mangle]
pub extern "C" fn haven_status_json(h: *mut super::haven_t, out: *mut haven_buf_t) -> c_int {
    entry("haven_status_json", || {
        let h = handle(h)?;
        let out = args::out("out", out)?;
        let status = match h.node() {
            // A member stopped by a storage failure still reports why.
            Some(node) => node.status()?,
            None => h.client().status()?,
        };
        *out = haven_buf_t::from_vec(json::status(&status).into_bytes());
        Ok(())
    })
}

/// The configuration in force, as the JSON array `"members"` of `haven_status_json`, in
/// `*out` (free with `haven_buf_free`). Blocking, errors and thread safety as
/// `haven_status_json`.
#[no_mangle]
pub extern "C" fn haven_members_json(h: *mut super::haven_t, out: *mut haven_buf_t) -> c_int {
    entry("haven_members_json", || {
        let h = handle(h)?;
        let out = args::out("out", out)?;
        let status = h.client().status()?;
        let mut text = String::new();
        json::members(&mut text, &status.members);
        *out = haven_buf_t::from_vec(text.into_bytes());
        Ok(())
    })
}

/// Add member `id` as a learner (a non-voter that receives the log) reachable at `address`
/// (`host:port`, borrowed for the call). Start it with `join` set and an empty data directory.
///
/// Blocks until the change is committed. Errors: INVALID_ARGUMENT, UNAVAILABLE (not applied),
/// TIMEOUT (may have been). Thread safe; membership changes are applied one at a time.
#[no_mangle]
pub extern "C" fn haven_add_learner(
    h: *mut super::haven_t,
    id: u64,
    address: *const c_char,
) -> c_int {
    entry("haven_add_learner", || {
        let h = handle(h)?;
        let address = text("address", address)?;
        h.client().add_learner(NodeId(id), address)
    })
}

/// Make learner `id` a voter. Blocking, errors and thread safety as `haven_add_learner`.
#[no_mangle]
pub extern "C" fn haven_promote_learner(h: *mut super::haven_t, id: u64) -> c_int {
    entry("haven_promote_learner", || {
        handle(h)?.client().promote_learner(NodeId(id))
    })
}

/// Remove member `id` (voter or learner). Blocking, errors and thread safety as
/// `haven_add_learner`.
#[no_mangle]
pub extern "C" fn haven_remove_member(h: *mut super::haven_t, id: u64) -> c_int {
    entry("haven_remove_member", || {
        handle(h)?.client().remove_member(NodeId(id))
    })
}

/// Hand leadership to voter `to`. Blocks until it leads. Errors and thread safety as
/// `haven_add_learner`.
#[no_mangle]
pub extern "C" fn haven_transfer_leadership(h: *mut super::haven_t, to: u64) -> c_int {
    entry("haven_transfer_leadership", || {
        handle(h)?.client().transfer_leadership(NodeId(to))
    })
}
