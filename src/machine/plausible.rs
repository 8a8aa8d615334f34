//! Bounds on the numbers a peer may state: generations, versions and incarnations that no
//! real node can reach are forgeries (or corruption), dropped at the door.
//!
//! Each of these numbers is won by being higher, so one forged at `u64::MAX` could never be
//! beaten: a node accused dead at it refuted at `MAX + 1`, which wrapped to 0 and lost; a
//! claim on its id or record at it was taken back at 0. One frame from anyone who could
//! connect (no secret set) made a live node dead for good, or took its id or its actors. The
//! bounds leave room above anything real, and an owner pushed to one moves to a new
//! generation instead of counting past it.

use crate::event::{ClusterEvent, Generation, Incarnation, Version};
use crate::gossip::Coverage;
use crate::roster::NodeDigest;

/// Largest incarnation a peer may state. A node says alive one higher per refutation or
/// restart; 2^40 of them is beyond any real life. A node accused at it cannot say alive above
/// and takes a new generation instead.
pub const MAX_INCARNATION: Incarnation = 1 << 40;

/// Largest version a peer may state. Versions start at a floor of 2^20 per millisecond of
/// wall-clock time ([`super::version_floor`]), which reaches 2^63 in the year 2248.
pub const MAX_VERSION: Version = 1 << 63;

/// Versions an owner keeps in hand below [`MAX_VERSION`] to re-assert its record above a
/// claim (one per entry of the record); a claim above `MAX_VERSION - this` is answered
/// with a new generation instead.
pub const REASSERT_ROOM: Version = 1 << 32;

/// How far a generation may be ahead of our wall clock, in ms. A generation is the unix ms
/// its data dir was created at (or one above a claimed one): ten years covers any skew of
/// real clocks, and a claim this far ahead is still taken back one above it.
pub const GENERATION_AHEAD_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// What a peer may state, as of our wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Largest generation: our unix ms plus [`GENERATION_AHEAD_MS`].
    pub max_generation: Generation,
}

impl Bounds {
    pub fn at(unix_ms: u64) -> Bounds {
        Bounds {
            max_generation: unix_ms.saturating_add(GENERATION_AHEAD_MS),
        }
    }

    /// Why `e` cannot come from a real node, if it cannot.
    pub fn check_event(&self, e: &ClusterEvent) -> Result<(), String> {
        self.check_generation(e.generation())?;
        if let Some(v) = e.version() {
            check_version(v)?;
        }
        match e {
            ClusterEvent::NodeSuspected { incarnation, .. }
            | ClusterEvent::NodeAlive { incarnation, .. }
            | ClusterEvent::NodeDead { incarnation, .. }
            | ClusterEvent::NodeLeft { incarnation, .. } => check_incarnation(*incarnation),
            _ => Ok(()),
        }
    }

    /// Why a digest entry cannot come from a real node, if it cannot.
    pub fn check_digest(&self, d: &NodeDigest) -> Result<(), String> {
        self.check_generation(d.generation)?;
        check_version(d.known)?;
        check_incarnation(d.liveness.incarnation)
    }

    /// Why a coverage claim cannot come from a real node, if it cannot.
    pub fn check_coverage(&self, c: &Coverage) -> Result<(), String> {
        self.check_generation(c.generation)?;
        check_version(c.upto)
    }

    pub fn check_generation(&self, g: Generation) -> Result<(), String> {
        if g > self.max_generation {
            return Err(format!(
                "generation {g} is more than ten years ahead of our clock"
            ));
        }
        Ok(())
    }
}

fn check_version(v: Version) -> Result<(), String> {
    if v > MAX_VERSION {
        return Err(format!("version {v} is above 2^63"));
    }
    Ok(())
}

fn check_incarnation(i: Incarnation) -> Result<(), String> {
    if i > MAX_INCARNATION {
        return Err(format!("incarnation {i} is above 2^40"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NodeId;

    #[test]
    fn numbers_no_node_can_reach_are_refused_and_real_ones_pass() {
        let now = 1_780_000_000_000;
        let b = Bounds::at(now);
        let dead = |incarnation| ClusterEvent::NodeDead {
            node: NodeId::new("a"),
            generation: now,
            incarnation,
        };
        assert!(b.check_event(&dead(3)).is_ok());
        assert!(b.check_event(&dead(MAX_INCARNATION)).is_ok());
        assert!(b.check_event(&dead(u64::MAX)).is_err());
        let added = |generation, version| ClusterEvent::ActorAdded {
            node: NodeId::new("a"),
            generation,
            version,
            actor: "x".into(),
        };
        let real_version = super::super::version_floor(now) + 5;
        assert!(b.check_event(&added(now, real_version)).is_ok());
        assert!(b.check_event(&added(now, u64::MAX)).is_err());
        assert!(b.check_event(&added(u64::MAX, real_version)).is_err());
        // A clock a year ahead of ours is still a real node.
        assert!(b.check_event(&added(now + 366 * 86_400_000, 1)).is_ok());
    }
}
