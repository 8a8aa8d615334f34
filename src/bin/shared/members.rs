//! The member table both binaries print (`gossip-node members|locate`, `gossip-log replay`);
//! `--json` prints the same member shape in both.

use gossip_roster::Member;

/// A table (with the owner version column when `versions`), or pretty JSON.
pub fn print(members: &[Member], json: bool, versions: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(members)?);
        return Ok(());
    }
    let row = |id: &str, addr: &str, state: &str, inc: &str, version: &str, actors: &str| {
        let mut line = format!("{id:<20} {addr:<28} {state:<8} {inc:>5}");
        if versions {
            line += &format!(" {version:>8}");
        }
        println!("{line}  {actors}");
    };
    row("ID", "ADDR", "STATE", "INC", "VERSION", "ACTORS");
    for m in members {
        row(
            m.id.as_str(),
            &m.addr,
            m.state.as_str(),
            &m.incarnation.to_string(),
            &m.version.to_string(),
            &m.actors.join(","),
        );
    }
    Ok(())
}
