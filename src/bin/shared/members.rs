//! The member table both binaries print (`gossip-node members|locate`, `gossip-log replay`);
//! `--json` prints the same member shape in both.

use gossip_roster::Member;

/// A table (with the owner version column when `versions`), or pretty JSON.
pub fn print(members: &[Member], json: bool, versions: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(members)?);
        return Ok(());
    }
    let row =
        |id: &str, addr: &str, state: &str, inc: &str, version: &str, tags: &str, actors: &str| {
            let mut line = format!("{id:<20} {addr:<28} {state:<8} {inc:>5}");
            if versions {
                line += &format!(" {version:>8}");
            }
            println!("{line}  {tags:<16}  {actors}");
        };
    row("ID", "ADDR", "STATE", "INC", "VERSION", "TAGS", "ACTORS");
    for m in members {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| tag(k, v)).collect();
        let tags = if tags.is_empty() {
            "-".to_owned()
        } else {
            tags.join(",")
        };
        // Passing actors by name; others with their health and note.
        let actors: Vec<String> = m
            .actors
            .iter()
            .map(|a| match m.health.get(a) {
                Some(h) if h.status != gossip_roster::Health::Passing && h.note.is_empty() => {
                    format!("{a}({})", h.status)
                }
                Some(h) if h.status != gossip_roster::Health::Passing => {
                    format!("{a}({}: {})", h.status, h.note)
                }
                _ => a.clone(),
            })
            .collect();
        row(
            m.id.as_str(),
            &m.addr,
            m.state.as_str(),
            &m.incarnation.to_string(),
            &m.version.to_string(),
            &tags,
            &actors.join(","),
        );
    }
    Ok(())
}

/// `KEY=VALUE`, the value quoted (JSON style) when it holds what would blur the table: a
/// comma (the tag separator), a quote, or whitespace (the column separator).
fn tag(key: &str, value: &str) -> String {
    if value.contains([',', '"']) || value.contains(char::is_whitespace) {
        format!("{key}={}", serde_json::Value::from(value))
    } else {
        format!("{key}={value}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_values_that_would_blur_the_table_are_quoted() {
        assert_eq!(super::tag("zone", "eu"), "zone=eu");
        assert_eq!(super::tag("evil", "x,zone=fake"), r#"evil="x,zone=fake""#);
        assert_eq!(super::tag("d", "two words"), r#"d="two words""#);
        assert_eq!(super::tag("q", "a\"b"), r#"q="a\"b""#);
        assert_eq!(super::tag("e", ""), "e=");
    }
}
