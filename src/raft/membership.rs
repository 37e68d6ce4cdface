//! Cluster membership: who votes, who only learns, and where each member can be reached.
//!
//! A configuration is stored *whole* in a [`EntryKind::Membership`] entry (never as a delta), so
//! any single entry tells the full configuration without replaying history. It takes effect on
//! a node as soon as the entry is appended to that node's log (Raft dissertation section 4.1),
//! and is reverted if the entry is later truncated away.

use crate::codec::{decode_value, encode_value};
use crate::error::Error;
use crate::limits::MAX_MEMBERS;
use crate::types::{Entry, EntryKind, NodeId};
use bincode::{Decode, Encode};
use std::collections::BTreeMap;

/// Version byte in front of an encoded [`Membership`] inside a log entry.
pub const MEMBERSHIP_FORMAT_VERSION: u8 = 1;

/// A cluster configuration. `address` strings are opaque to Raft: the runtime uses them to
/// connect to peers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Membership {
    /// Voting members and their addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Non-voting members (they receive the log but neither vote nor count toward commit).
    pub learners: BTreeMap<NodeId, String>,
}

/// One single-server change (Raft dissertation section 4.1). Voters are added in two steps,
/// as a learner first and then promoted, so a new server catches up without hurting
/// availability.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum MembershipChange {
    /// Add a non-voting member.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// Its address (opaque to Raft).
        address: String,
    },
    /// Make an existing learner a voter.
    PromoteLearner {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or a learner.
    Remove {
        /// The member to remove.
        id: NodeId,
    },
}

impl Membership {
    /// A configuration of voters only.
    pub fn with_voters<I, A>(voters: I) -> Membership
    where
        I: IntoIterator<Item = (NodeId, A)>,
        A: Into<String>,
    {
        Membership {
            voters: voters.into_iter().map(|(id, a)| (id, a.into())).collect(),
            learners: BTreeMap::new(),
        }
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains_key(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member (voters first, then learners), in id order within each group.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.keys().chain(self.learners.keys()).copied()
    }

    /// The address of a member.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.voters
            .get(&id)
            .or_else(|| self.learners.get(&id))
            .map(String::as_str)
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why the change is not allowed.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, String> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner { id, address } => {
                if id.0 == 0 {
                    return Err("node id 0 is not valid".into());
                }
                if self.contains(*id) {
                    return Err(format!("{id} is already a member"));
                }
                if self.voters.len() + self.learners.len() >= MAX_MEMBERS {
                    return Err(format!("a cluster has at most {MAX_MEMBERS} members"));
                }
                next.learners.insert(*id, address.clone());
            }
            MembershipChange::PromoteLearner { id } => match next.learners.remove(id) {
                Some(address) => {
                    next.voters.insert(*id, address);
                }
                None => return Err(format!("{id} is not a learner")),
            },
            MembershipChange::Remove { id } => {
                if next.voters.remove(id).is_none() && next.learners.remove(id).is_none() {
                    return Err(format!("{id} is not a member"));
                }
                if next.voters.is_empty() {
                    return Err(format!("removing {id} would leave no voter"));
                }
            }
        }
        Ok(next)
    }

    /// The payload of a membership entry: a version byte, then the bincode value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MEMBERSHIP_FORMAT_VERSION];
        // A configuration has at most MAX_MEMBERS members whose addresses come from the
        // operator; it is far below the frame limit, so encoding cannot fail.
        out.extend(encode_value(self).expect("membership encodes within the frame limit"));
        out
    }

    /// Decode the payload of a membership entry. Bad bytes are `Corrupt`; an unknown version is
    /// `UnsupportedVersion`. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Membership, Error> {
        match bytes.split_first() {
            None => Err(Error::corrupt(0, "empty membership payload")),
            Some((&MEMBERSHIP_FORMAT_VERSION, rest)) => {
                let m: Membership = decode_value(rest)?;
                if m.voters.len() + m.learners.len() > MAX_MEMBERS {
                    return Err(Error::corrupt(1, "membership over the member limit"));
                }
                if m.voters.keys().any(|id| m.learners.contains_key(id)) {
                    return Err(Error::corrupt(1, "a member is both voter and learner"));
                }
                Ok(m)
            }
            Some((&found, _)) => Err(Error::UnsupportedVersion {
                what: "membership entry",
                found: found as u32,
                supported: MEMBERSHIP_FORMAT_VERSION as u32,
            }),
        }
    }

    /// The configuration carried by `entry`, if it is a membership entry.
    pub fn from_entry(entry: &Entry) -> Result<Option<Membership>, Error> {
        match entry.kind {
            EntryKind::Membership => Membership::decode(&entry.data).map(Some),
            EntryKind::Normal | EntryKind::Noop => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::with_voters([(NodeId(1), "a"), (NodeId(2), "b"), (NodeId(3), "c")])
    }

    #[test]
    fn encode_decode_roundtrip_and_defects() {
        let m = three()
            .apply(&MembershipChange::AddLearner {
                id: NodeId(4),
                address: "d:1".into(),
            })
            .unwrap();
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes).unwrap(), m);
        assert!(matches!(
            Membership::decode(&[]),
            Err(Error::Corrupt { .. })
        ));
        let mut other_version = bytes.clone();
        other_version[0] = 9;
        assert!(matches!(
            Membership::decode(&other_version),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(
            Membership::decode(&bytes[..bytes.len() - 1]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn payload_layout_is_stable() {
        // Version 1, then voters {1: "a"} and no learners: map length, id, string length,
        // bytes; map length 0. See docs/FORMAT.md ("Membership entry").
        let m = Membership::with_voters([(NodeId(1), "a")]);
        assert_eq!(m.encode(), vec![1, 1, 1, 1, b'a', 0]);
        let both = [1, 1, 1, 1, b'a', 1, 1, 1, b'a'];
        assert!(matches!(
            Membership::decode(&both),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn single_server_changes_are_checked() {
        let m = three();
        assert_eq!(m.quorum(), 2);
        assert!(m
            .apply(&MembershipChange::PromoteLearner { id: NodeId(4) })
            .is_err());
        assert!(m
            .apply(&MembershipChange::AddLearner {
                id: NodeId(2),
                address: String::new()
            })
            .is_err());
        let added = m
            .apply(&MembershipChange::AddLearner {
                id: NodeId(4),
                address: "x".into(),
            })
            .unwrap();
        assert!(added.is_learner(NodeId(4)) && !added.is_voter(NodeId(4)));
        let promoted = added
            .apply(&MembershipChange::PromoteLearner { id: NodeId(4) })
            .unwrap();
        assert!(promoted.is_voter(NodeId(4)));
        assert_eq!(promoted.quorum(), 3);
        assert_eq!(promoted.address(NodeId(4)), Some("x"));
        let one = Membership::with_voters([(NodeId(1), "a")]);
        assert!(one
            .apply(&MembershipChange::Remove { id: NodeId(1) })
            .is_err());
    }
}
