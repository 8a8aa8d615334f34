//! The member table both binaries print (`gossip-node members|locate`, `gossip-log replay`);
//! `--json` prints the same member shape in both.

use gossip_roster::Member;

/// Most actors the table lists per member; `--json` lists them all. A node hosting 20,000
/// made one 240 KB line of `members` (black-box trial).
const TABLE_ACTORS_MAX: usize = 16;

/// A table (with the owner version column when `versions`), or pretty JSON.
pub fn print(members: &[Member], json: bool, versions: bool) -> anyhow::Result<()> {
    print_focused(members, json, versions, None)
}

/// As [`print`]; the table lists `focus` (the actor `locate` looked for) first.
pub fn print_focused(
    members: &[Member],
    json: bool,
    versions: bool,
    focus: Option<&str>,
) -> anyhow::Result<()> {
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
        row(
            m.id.as_str(),
            &m.addr,
            m.state.as_str(),
            &m.incarnation.to_string(),
            &m.version.to_string(),
            &tags,
            &actors_cell(m, focus),
        );
    }
    Ok(())
}

/// The ACTORS column: passing actors by name, others with their health and note; `focus`
/// first when hosted; at most [`TABLE_ACTORS_MAX`], then how many more.
fn actors_cell(m: &Member, focus: Option<&str>) -> String {
    let focused = focus.filter(|f| m.actors.iter().any(|a| a == f));
    let mut actors: Vec<String> = focused
        .into_iter()
        .chain(
            m.actors
                .iter()
                .map(String::as_str)
                .filter(|a| Some(*a) != focused),
        )
        .take(TABLE_ACTORS_MAX)
        .map(|a| match m.health.get(a) {
            Some(h) if h.status != gossip_roster::Health::Passing && h.note.is_empty() => {
                format!("{a}({})", h.status)
            }
            Some(h) if h.status != gossip_roster::Health::Passing => {
                format!("{a}({}: {})", h.status, h.note)
            }
            _ => a.to_owned(),
        })
        .collect();
    if m.actors.len() > TABLE_ACTORS_MAX {
        actors.push(format!(
            "... +{} more (--json lists all)",
            m.actors.len() - TABLE_ACTORS_MAX
        ));
    }
    actors.join(",")
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
    fn member_with(actors: usize) -> gossip_roster::Member {
        let mut m: gossip_roster::Member = serde_json::from_value(serde_json::json!({
            "id": "n1", "addr": "ws://127.0.0.1:1", "state": "alive", "actors": [],
            "incarnation": 0, "generation": 1, "version": 0, "tags": {}, "health": {}
        }))
        .unwrap();
        m.actors = (0..actors).map(|i| format!("a{i:05}")).collect();
        m
    }

    /// A node with 20,000 actors made `members` and `locate` print one 240 KB line each
    /// (black-box trial); `locate` showed the actor it found somewhere in it.
    #[test]
    fn the_actors_column_is_capped_and_shows_the_located_actor_first() {
        let few = member_with(3);
        assert_eq!(super::actors_cell(&few, None), "a00000,a00001,a00002");
        let many = member_with(20_000);
        let cell = super::actors_cell(&many, Some("a12345"));
        assert!(cell.starts_with("a12345,a00000,"), "{cell}");
        assert!(
            cell.ends_with(",... +19984 more (--json lists all)"),
            "{cell}"
        );
        assert_eq!(cell.split(',').count(), super::TABLE_ACTORS_MAX + 1);
        // A name it does not host changes nothing.
        assert!(super::actors_cell(&many, Some("zz")).starts_with("a00000,"));
    }

    #[test]
    fn tag_values_that_would_blur_the_table_are_quoted() {
        assert_eq!(super::tag("zone", "eu"), "zone=eu");
        assert_eq!(super::tag("evil", "x,zone=fake"), r#"evil="x,zone=fake""#);
        assert_eq!(super::tag("d", "two words"), r#"d="two words""#);
        assert_eq!(super::tag("q", "a\"b"), r#"q="a\"b""#);
        assert_eq!(super::tag("e", ""), "e=");
    }
}
