//! Actor health: each hosted actor is `passing`, `warning` or `critical`, with a short
//! note. Set by the embedding application ([`crate::Node::set_health`]), by a TTL it must
//! renew ([`crate::Node::set_health_ttl`], [`crate::Node::pass_ttl`]), or by a check
//! command the node runs (`--check ACTOR=COMMAND`). `locate` prefers passing hosts and
//! leaves critical ones out.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Longest health note, in bytes of UTF-8; longer notes are truncated (at a character
/// boundary) where they come from a command's output, refused where an API caller gives one.
pub const MAX_NOTE_BYTES: usize = 256;

/// How an actor is doing. Ordered from best to worst.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    /// A check command's exit code: 0 passing, 1 warning, anything else critical.
    pub fn from_exit_code(code: Option<i32>) -> Health {
        match code {
            Some(0) => Health::Passing,
            Some(1) => Health::Warning,
            _ => Health::Critical,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Health {
    type Err = HealthError;
    fn from_str(s: &str) -> Result<Health, HealthError> {
        match s {
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            other => Err(HealthError::UnknownHealth(other.chars().take(64).collect())),
        }
    }
}

/// An actor's health with its note, as `members` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorHealth {
    pub status: Health,
    pub note: String,
}

/// Why a health change was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HealthError {
    #[error("a health note of {len} bytes is over the limit of {MAX_NOTE_BYTES}")]
    NoteTooLong { len: usize },
    #[error("the health note contains a control, invisible or direction-changing character at byte {at}")]
    BadNoteChar { at: usize },
    #[error("{0:?} is not a health (passing, warning or critical)")]
    UnknownHealth(String),
    #[error("this node does not host actor {0:?}")]
    NotHosted(String),
    #[error("a health TTL must be longer than zero")]
    ZeroTtl,
    #[error("actor {0:?} has no health TTL to renew")]
    NoTtl(String),
}

/// Checks a note given by an API caller.
pub fn validate_note(note: &str) -> Result<(), HealthError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(HealthError::NoteTooLong { len: note.len() });
    }
    if let Some((at, _)) = note
        .char_indices()
        .find(|(_, c)| c.is_control() || crate::names::is_invisible(*c))
    {
        return Err(HealthError::BadNoteChar { at });
    }
    Ok(())
}

/// A note from a command's output: its first line, control characters dropped, cut to
/// [`MAX_NOTE_BYTES`] at a character boundary.
pub fn note_from_output(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut note = String::new();
    for c in line
        .trim()
        .chars()
        .filter(|c| !c.is_control() && !crate::names::is_invisible(*c))
    {
        if note.len() + c.len_utf8() > MAX_NOTE_BYTES {
            break;
        }
        note.push(c);
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_health() {
        assert_eq!(Health::from_exit_code(Some(0)), Health::Passing);
        assert_eq!(Health::from_exit_code(Some(1)), Health::Warning);
        assert_eq!(Health::from_exit_code(Some(2)), Health::Critical);
        assert_eq!(Health::from_exit_code(None), Health::Critical);
        assert!(Health::Passing < Health::Warning && Health::Warning < Health::Critical);
    }

    #[test]
    fn notes_are_first_lines_cut_at_a_char_boundary() {
        assert_eq!(note_from_output(b"\n  disk ok  \nmore"), "disk ok");
        let long = "é".repeat(200);
        let note = note_from_output(long.as_bytes());
        assert!(note.len() <= MAX_NOTE_BYTES && note.len() == 256);
        assert!(validate_note(&note).is_ok());
        assert_eq!(
            validate_note(&"x".repeat(257)),
            Err(HealthError::NoteTooLong { len: 257 })
        );
        assert_eq!(
            validate_note("a\tb"),
            Err(HealthError::BadNoteChar { at: 1 })
        );
        assert_eq!("warning".parse::<Health>(), Ok(Health::Warning));
        assert!("ok".parse::<Health>().is_err());
    }
}
