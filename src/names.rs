//! Actor names: one rule for `--actor`, the admin API and the library.
//!
//! A name is what `locate` looks up and what the CLI prints one to a line or joined by
//! commas, so it is non-empty, at most [`MAX_ACTOR_NAME_BYTES`] bytes of UTF-8, with no
//! whitespace, no control characters, no invisible or direction-changing characters (a
//! name must look like what it is: `\u{202e}evil` would show as `live`) and no comma. The byte limit keeps every single event
//! far below the smallest frame a node accepts, so any record can always be gossiped.

use thiserror::Error;

/// Longest actor name, in bytes of UTF-8.
pub const MAX_ACTOR_NAME_BYTES: usize = 1024;

/// Why a name was refused. Nothing was registered.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("names must not be empty")]
    Empty,
    #[error("a name of {len} bytes is over the limit ({MAX_ACTOR_NAME_BYTES} bytes for actors, {MAX_NODE_ID_BYTES} for node ids)")]
    TooLong { len: usize },
    #[error("name {name:?} contains {what} at byte {at}; names have no whitespace, control, invisible or direction-changing characters, or commas")]
    BadChar {
        name: String,
        what: &'static str,
        at: usize,
    },
}

/// Checks one actor name against the rules in the module doc.
pub fn validate_actor_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_ACTOR_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    for (at, c) in name.char_indices() {
        let what = if c.is_control() {
            "a control character"
        } else if is_invisible(c) {
            "an invisible or direction-changing character"
        } else if c.is_whitespace() {
            "whitespace"
        } else if c == ',' {
            "a comma"
        } else {
            continue;
        };
        let shown: String = name.chars().take(64).collect();
        return Err(NameError::BadChar {
            name: shown,
            what,
            at,
        });
    }
    Ok(())
}

/// Unicode format characters that change how text around them looks without showing
/// themselves: zero-width characters, bidirectional controls and overrides, the BOM. In a
/// name, a tag or a note they make one thing look like another in tables and the dashboard.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Longest node id, in bytes of UTF-8.
pub const MAX_NODE_ID_BYTES: usize = 256;

/// Checks a node id: the same rules as actor names (it appears in logs, tables and
/// comma-separated lists too), at most [`MAX_NODE_ID_BYTES`] bytes.
pub fn validate_node_id(id: &str) -> Result<(), NameError> {
    if id.len() > MAX_NODE_ID_BYTES {
        return Err(NameError::TooLong { len: id.len() });
    }
    validate_actor_name(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for ok in [
            "billing",
            "a",
            "orders/eu-1",
            "\u{4e2d}\u{6587}",
            &"x".repeat(1024),
        ] {
            assert_eq!(validate_actor_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_actor_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_actor_name(&"x".repeat(1025)),
            Err(NameError::TooLong { len: 1025 })
        );
        for bad in [
            "a b",
            "a\tb",
            "a\nb",
            "a,b",
            "a\u{0}b",
            "a\u{85}b",
            "a\u{3000}b",
        ] {
            assert!(
                matches!(validate_actor_name(bad), Err(NameError::BadChar { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for bad in [
            "\u{202e}evil",
            "zero\u{200b}width",
            "bom\u{feff}",
            "iso\u{2066}late",
        ] {
            let e = validate_actor_name(bad).unwrap_err();
            assert!(e.to_string().contains("invisible"), "{bad:?}: {e}");
        }
        assert!(
            validate_actor_name("caf\u{e9}-\u{7a7a}").is_ok(),
            "letters of any script"
        );
        assert!(crate::tags::validate_value("k", "\u{202e}gnp.exe").is_err());
        assert!(crate::health::validate_note("ok\u{200b}").is_err());
    }
}
