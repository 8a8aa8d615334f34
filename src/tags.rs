//! Node tags: versioned key-value metadata a node keeps about itself (`--tag KEY=VALUE`,
//! `gossip-node tags set|unset`, [`crate::Node::set_tags`]), gossiped with its record.
//!
//! The limits keep every tag event far below the smallest frame a node accepts and a
//! node's whole tag set within one admin answer frame.

use thiserror::Error;

/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 128;
/// Longest tag value, in bytes of UTF-8.
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// Most tags one node may carry.
pub const MAX_TAGS: usize = 64;
/// Most bytes of keys and values one node's tags may add up to.
pub const MAX_TAG_BYTES: usize = 16 * 1024;

/// Why a tag change was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TagError {
    #[error("tag keys must not be empty")]
    EmptyKey,
    #[error("tag key of {len} bytes is over the limit of {MAX_TAG_KEY_BYTES}")]
    KeyTooLong { len: usize },
    #[error("tag key {key:?} has {found:?} at byte {at}; keys use only a-z A-Z 0-9 _ . - /")]
    BadKeyChar { key: String, found: char, at: usize },
    #[error("the value of tag {key:?} is {len} bytes, over the limit of {MAX_TAG_VALUE_BYTES}")]
    ValueTooLong { key: String, len: usize },
    #[error("the value of tag {key:?} contains a control, invisible or direction-changing character at byte {at}")]
    BadValueChar { key: String, at: usize },
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("a node carries at most {MAX_TAGS} tags; this change would make {count}")]
    TooMany { count: usize },
    #[error(
        "a node's tags add up to at most {MAX_TAG_BYTES} bytes; this change would make {bytes}"
    )]
    TooLarge { bytes: usize },
}

/// Checks a tag key: 1 to [`MAX_TAG_KEY_BYTES`] bytes of `[a-zA-Z0-9_.-/]`.
pub fn validate_key(key: &str) -> Result<(), TagError> {
    if key.is_empty() {
        return Err(TagError::EmptyKey);
    }
    if key.len() > MAX_TAG_KEY_BYTES {
        return Err(TagError::KeyTooLong { len: key.len() });
    }
    if let Some((at, found)) = key
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(TagError::BadKeyChar {
            key: key.chars().take(64).collect(),
            found,
            at,
        });
    }
    Ok(())
}

/// Checks a tag value: at most [`MAX_TAG_VALUE_BYTES`] bytes, no control characters (it is
/// printed in tables and logs). Empty is allowed.
pub fn validate_value(key: &str, value: &str) -> Result<(), TagError> {
    if value.len() > MAX_TAG_VALUE_BYTES {
        return Err(TagError::ValueTooLong {
            key: key.to_owned(),
            len: value.len(),
        });
    }
    if let Some((at, _)) = value
        .char_indices()
        .find(|(_, c)| c.is_control() || crate::names::is_invisible(*c))
    {
        return Err(TagError::BadValueChar {
            key: key.to_owned(),
            at,
        });
    }
    Ok(())
}

/// Parses and checks `KEY=VALUE` (the value may be empty; it may contain `=`).
pub fn parse_tag(s: &str) -> Result<(String, String), TagError> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| TagError::NotKeyValue(s.chars().take(64).collect()))?;
    validate_key(key)?;
    validate_value(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Checks that a whole tag set stays within [`MAX_TAGS`] and [`MAX_TAG_BYTES`].
pub fn check_totals<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), TagError> {
    let (mut count, mut bytes) = (0, 0);
    for (k, v) in tags {
        count += 1;
        bytes += k.len() + v.len();
    }
    if count > MAX_TAGS {
        return Err(TagError::TooMany { count });
    }
    if bytes > MAX_TAG_BYTES {
        return Err(TagError::TooLarge { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_the_rules() {
        assert_eq!(parse_tag("zone=eu-1"), Ok(("zone".into(), "eu-1".into())));
        assert_eq!(
            parse_tag("a.b/c_d-e="),
            Ok(("a.b/c_d-e".into(), String::new()))
        );
        assert_eq!(parse_tag("x=a=b"), Ok(("x".into(), "a=b".into())));
        assert_eq!(parse_tag("zone"), Err(TagError::NotKeyValue("zone".into())));
        assert_eq!(parse_tag("=v"), Err(TagError::EmptyKey));
        assert!(matches!(
            parse_tag("bad key=v"),
            Err(TagError::BadKeyChar {
                found: ' ',
                at: 3,
                ..
            })
        ));
        assert!(matches!(
            parse_tag(&format!("{}=v", "k".repeat(129))),
            Err(TagError::KeyTooLong { len: 129 })
        ));
        assert!(parse_tag(&format!("{}=v", "k".repeat(128))).is_ok());
        assert!(matches!(
            parse_tag(&format!("k={}", "v".repeat(1025))),
            Err(TagError::ValueTooLong { len: 1025, .. })
        ));
        assert!(matches!(
            parse_tag("k=a\nb"),
            Err(TagError::BadValueChar { at: 1, .. })
        ));
    }

    #[test]
    fn totals_are_bounded() {
        let many: Vec<(String, String)> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        let view = |n: usize| {
            many[..n]
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        };
        assert!(check_totals(view(64)).is_ok());
        assert_eq!(check_totals(view(65)), Err(TagError::TooMany { count: 65 }));
        let big = "v".repeat(1024);
        let large: Vec<(String, String)> =
            (0..17).map(|i| (format!("k{i:02}"), big.clone())).collect();
        assert!(matches!(
            check_totals(large.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Err(TagError::TooLarge { .. })
        ));
    }
}
