//! Who we are: the owner of one record in the roster. The rules for writing that record
//! (versions, start-up, re-assertion) live in the machine (`machine/own.rs`).

use crate::event::{Generation, NodeId};
use crate::roster::Roster;
use crate::MemberState;

/// Who we are: the owner of one record in the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: NodeId,
    pub generation: Generation,
}

impl Identity {
    /// Whether our own record says we left: a graceful leave ends this generation for good.
    pub fn has_left(&self, roster: &Roster) -> bool {
        roster.record(&self.id).is_some_and(|r| {
            r.generation == self.generation && r.liveness.state == MemberState::Left
        })
    }
}
