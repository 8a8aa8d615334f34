//! Split-brain downing: when a partition has lasted long enough, each side decides from its
//! own view whether it is the one that goes on. The losing side marks itself down (it stops
//! answering `locate`, and the application is told so it can stop its actors); the winning
//! side declares the members it cannot reach dead and forgets them, so its quorum no longer
//! waits for them. Both sides run the same rule on the same membership, so they agree on
//! who wins without talking to each other (they cannot: they are partitioned).

use crate::event::NodeId;
use std::time::Duration;

/// Which side of a partition goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// No downing: both sides go on (the default; the quorum is only reported).
    #[default]
    Off,
    /// The side that sees more than half of the largest recent cluster; on an exact half,
    /// the side holding the lowest member id.
    KeepMajority,
    /// The side that sees at least this many members (itself included).
    StaticQuorum(u64),
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Strategy::Off),
            "keep-majority" => Ok(Strategy::KeepMajority),
            _ => match s.strip_prefix("static-quorum=").map(str::parse::<u64>) {
                Some(Ok(n)) if n >= 1 => Ok(Strategy::StaticQuorum(n)),
                Some(_) => Err(format!(
                    "{s:?}: static-quorum needs a member count of at least 1 (static-quorum=N)"
                )),
                None => Err(format!(
                    "{s:?}: expected off, keep-majority or static-quorum=N"
                )),
            },
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Off => f.write_str("off"),
            Strategy::KeepMajority => f.write_str("keep-majority"),
            Strategy::StaticQuorum(n) => write!(f, "static-quorum={n}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DowningConfig {
    pub strategy: Strategy,
    /// The set of reachable members must hold still this long before a side decides: a
    /// partition still forming (or healing) is not judged halfway.
    pub stable_after: Duration,
}

impl Default for DowningConfig {
    fn default() -> Self {
        DowningConfig {
            strategy: Strategy::Off,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// What one side knows when it decides.
#[derive(Clone, Debug)]
pub struct View<'a> {
    /// Members this node sees alive, itself included.
    pub reachable: u64,
    /// The largest recent cluster size (the quorum base: members that did not leave).
    pub largest: u64,
    /// The lowest id among members that did not leave (reachable or not), and whether this
    /// side reaches it.
    pub lowest: Option<(&'a NodeId, bool)>,
}

/// Whether the side with this view goes on, and if not, why (one line).
pub fn verdict(strategy: Strategy, view: &View) -> Result<(), String> {
    let View {
        reachable, largest, ..
    } = *view;
    match strategy {
        Strategy::Off => Ok(()),
        Strategy::KeepMajority if reachable * 2 > largest => Ok(()),
        Strategy::KeepMajority if reachable * 2 == largest => match view.lowest {
            Some((_, true)) => Ok(()),
            Some((id, false)) => Err(format!(
                "an exact half ({reachable} of {largest}) without the lowest member id ({id}): the other half goes on"
            )),
            None => Err(format!("an exact half ({reachable} of {largest})")),
        },
        Strategy::KeepMajority => Err(format!(
            "a minority: {reachable} reachable of the largest recent cluster of {largest}"
        )),
        Strategy::StaticQuorum(n) if reachable >= n => Ok(()),
        Strategy::StaticQuorum(n) => Err(format!(
            "below the static quorum: {reachable} reachable, {n} needed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(reachable: u64, largest: u64, lowest_ours: bool) -> Result<(), String> {
        let id = NodeId::new("a");
        verdict(
            Strategy::KeepMajority,
            &View {
                reachable,
                largest,
                lowest: Some((&id, lowest_ours)),
            },
        )
    }

    #[test]
    fn keep_majority_picks_exactly_one_side_of_any_split() {
        for largest in 1..=9u64 {
            for a in 0..=largest {
                let b = largest - a;
                // The lowest id is on one side only.
                for lowest_on_a in [true, false] {
                    let wins_a = view(a, largest, lowest_on_a).is_ok();
                    let wins_b = view(b, largest, !lowest_on_a).is_ok();
                    assert!(!(wins_a && wins_b), "{a}/{b} of {largest}: both go on");
                    if a > 0 && b > 0 {
                        assert!(wins_a || wins_b, "{a}/{b} of {largest}: neither goes on");
                    }
                }
            }
        }
    }

    #[test]
    fn static_quorum_counts_members() {
        let v = |reachable| View {
            reachable,
            largest: 5,
            lowest: None,
        };
        assert!(verdict(Strategy::StaticQuorum(3), &v(3)).is_ok());
        let e = verdict(Strategy::StaticQuorum(3), &v(2)).unwrap_err();
        assert!(e.contains("static quorum"), "{e}");
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in ["off", "keep-majority", "static-quorum=3"] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "majority",
            "static-quorum=",
            "static-quorum=0",
            "static-quorum=x",
        ] {
            assert!(bad.parse::<Strategy>().is_err(), "{bad}");
        }
    }
}
