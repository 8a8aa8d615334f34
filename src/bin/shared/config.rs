//! Where `gossip-node`'s run settings come from besides the command line: an environment
//! variable per flag (`GOSSIP_` + the flag in upper snake case; repeatable flags take a
//! comma-separated list) and a TOML file (`--config FILE` or `GOSSIP_CONFIG`) whose keys are
//! the flag names. Precedence: flag > env > file > default.
//!
//! Nothing here names a flag: every long flag of the command (help and version aside) gets
//! its variable and its file key, so a flag added to the run arguments is covered as is.
//! File values become the flags' defaults before clap parses, so clap's own precedence
//! decides and its value parsers check file values the same way (each error names the file,
//! the key and the line).

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The flag naming the config file (its variable is `GOSSIP_CONFIG`).
pub const CONFIG_FLAG: &str = "config";

/// `GOSSIP_` + the long flag in upper snake case: `data-dir` -> `GOSSIP_DATA_DIR`.
pub fn env_name(long: &str) -> String {
    format!("GOSSIP_{}", long.replace('-', "_").to_uppercase())
}

/// The flags that take settings: every long flag but help and version.
fn settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some() && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Gives every setting of `cmd` its environment variable; repeatable ones split on commas
/// (names and addresses never hold one).
pub fn with_env(cmd: Command) -> Command {
    let ids: Vec<String> = settings(&cmd).map(|a| a.get_id().to_string()).collect();
    with_env_for(cmd, &ids)
}

/// Repeatable settings whose values may hold commas (a tag's value, a check's shell
/// command): split on newlines instead (a tag value holds no control character; a check is
/// one line), so one variable can still carry several: `GOSSIP_TAG=$'zone=a\nrack=r1'`.
const LINE_SPLIT: &[&str] = &["tags", "checks"];

/// [`with_env`] for the settings of `cmd` whose id is in `ids` only (a subcommand taking
/// the run settings besides flags of its own).
pub fn with_env_for(cmd: Command, ids: &[String]) -> Command {
    let args: Vec<(String, String, bool)> = settings(&cmd)
        .filter(|a| ids.iter().any(|id| id == a.get_id().as_str()))
        .map(|a| {
            let long = a.get_long().expect("settings have a long flag");
            (a.get_id().to_string(), env_name(long), repeatable(a))
        })
        .collect();
    args.into_iter().fold(cmd, |cmd, (id, env, multi)| {
        cmd.mut_arg(id.as_str(), |a| {
            let a = a.env(env);
            match (multi, LINE_SPLIT.contains(&id.as_str())) {
                (false, _) => a,
                (true, false) => a.value_delimiter(','),
                (true, true) => a.value_delimiter('\n'),
            }
        })
    })
}

/// The config file named on the command line (`--config FILE`, `--config=FILE`), else by
/// `GOSSIP_CONFIG`. Read before parsing: the file's values are the parser's defaults.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == flag {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix(&format!("{flag}=")) {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(env_name(CONFIG_FLAG))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The settings a config file gave, checked: arg id -> values.
#[derive(Debug)]
pub struct FileValues {
    values: BTreeMap<String, Vec<String>>,
}

impl FileValues {
    pub fn has(&self, id: &str) -> bool {
        self.values.contains_key(id)
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and checks `path` against the settings of `cmd`: each key a flag (`data-dir` or
/// `data_dir`), each value of the flag's kind and accepted by its parser.
pub fn load(path: &Path, cmd: &Command) -> Result<FileValues> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(", line {}", line_of(&text, s.start)));
        anyhow!(
            "config file {}{}: {}",
            path.display(),
            line.unwrap_or_default(),
            e.message().trim()
        )
    })?;
    let mut values = BTreeMap::new();
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .key(key)
            .and_then(|k| k.span())
            .map(|s| line_of(&text, s.start))
            .unwrap_or(0);
        let at = || format!("config file {}, line {line}, key `{key}`", path.display());
        let long = key.replace('_', "-");
        let arg = settings(cmd)
            .find(|a| a.get_long() == Some(long.as_str()) && long != CONFIG_FLAG)
            .ok_or_else(|| {
                anyhow!(
                    "{}: unknown key (keys are the long flag names, e.g. data-dir; see --help)",
                    at()
                )
            })?;
        let id = arg.get_id().to_string();
        let vals = file_values(item, repeatable(arg)).map_err(|e| anyhow!("{}: {e}", at()))?;
        check_values(arg, &vals).map_err(|e| anyhow!("{}: {}", at(), clap_message(&e)))?;
        if values.insert(id, vals).is_some() {
            bail!(
                "{}: given twice (as {long} and as {})",
                at(),
                long.replace('-', "_")
            );
        }
    }
    Ok(FileValues { values })
}

/// Runs the flag's value parser over `vals`, alone (its relations to other flags are
/// checked when the whole command line is parsed).
fn check_values(arg: &Arg, vals: &[String]) -> Result<(), clap::Error> {
    let long = arg
        .get_long()
        .expect("settings have a long flag")
        .to_owned();
    let alone = Arg::new(arg.get_id().clone())
        .long(long.clone())
        .action(ArgAction::Append)
        .value_parser(arg.get_value_parser().clone());
    let argv = vals.iter().flat_map(|v| [format!("--{long}"), v.clone()]);
    Command::new("gossip-node")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from(argv)
        .map(|_| ())
}

/// The values of one key: a scalar, or for a repeatable flag an array of scalars.
fn file_values(item: &toml_edit::Item, multi: bool) -> Result<Vec<String>, String> {
    let value = item
        .as_value()
        .ok_or_else(|| "expected a value, got a table".to_owned())?;
    match value.as_array() {
        Some(_) if !multi => {
            Err("expected one value, got an array (only repeatable flags take arrays)".into())
        }
        Some(array) => array.iter().map(scalar).collect(),
        None => Ok(vec![scalar(value)?]),
    }
}

fn scalar(v: &toml_edit::Value) -> Result<String, String> {
    use toml_edit::Value;
    match v {
        Value::String(s) => Ok(s.value().clone()),
        Value::Integer(i) => Ok(i.value().to_string()),
        Value::Float(f) => Ok(f.value().to_string()),
        Value::Boolean(b) => Ok(b.value().to_string()),
        Value::Datetime(_) => Err("expected a string, number or boolean, got a date".into()),
        Value::Array(_) => Err("expected a string, number or boolean, got an array".into()),
        Value::InlineTable(_) => Err("expected a string, number or boolean, got a table".into()),
    }
}

/// clap's error as one line: its first paragraph, without the `error:` prefix and the
/// usage hints that follow.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    first.join(" ").trim_start_matches("error: ").to_owned()
}

/// `cmd` with no setting required: `config --print` shows what is missing as not set.
pub fn none_required(cmd: Command) -> Command {
    let ids: Vec<String> = settings(&cmd).map(|a| a.get_id().to_string()).collect();
    ids.into_iter()
        .fold(cmd, |cmd, id| cmd.mut_arg(id, |a| a.required(false)))
}

/// Makes the file's values the defaults of `cmd` (a file value satisfies a required flag).
pub fn apply(cmd: Command, file: &FileValues) -> Command {
    file.values.iter().fold(cmd, |cmd, (id, vals)| {
        cmd.mut_arg(id, |a| a.default_values(vals.clone()).required(false))
    })
}

/// One effective setting and where it came from.
pub struct Setting {
    pub key: String,
    pub values: Vec<String>,
    pub repeatable: bool,
    /// flag, env, file, default, or unset.
    pub source: &'static str,
}

/// The effective value of every setting of `cmd` in `matches`, with its source.
pub fn effective(cmd: &Command, matches: &ArgMatches, file: Option<&FileValues>) -> Vec<Setting> {
    settings(cmd)
        .filter(|a| !a.is_hide_set())
        .map(|a| {
            let id = a.get_id().as_str();
            let values: Vec<String> = matches
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "env",
                Some(ValueSource::DefaultValue) if file.is_some_and(|f| f.has(id)) => "file",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            };
            Setting {
                key: a.get_long().expect("settings have a long flag").to_owned(),
                values,
                repeatable: repeatable(a),
                source,
            }
        })
        .collect()
}

/// Settings as JSON: `{ key: { "value": .., "source": .. } }` (unset values are null).
pub fn to_json(settings: &[Setting]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = settings
        .iter()
        .map(|s| {
            let value = if s.repeatable {
                serde_json::json!(s.values)
            } else {
                s.values
                    .first()
                    .map_or(serde_json::Value::Null, |v| serde_json::json!(v))
            };
            (
                s.key.clone(),
                serde_json::json!({ "value": value, "source": s.source }),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Settings as a TOML file that gives the same values, each line commented with its source.
pub fn to_toml(settings: &[Setting]) -> String {
    let mut out = String::from(
        "# effective gossip-node settings; each comment says where the value came from\n",
    );
    for s in settings {
        if s.values.is_empty() && !s.repeatable {
            out += &format!("# {} is not set\n", s.key);
            continue;
        }
        if s.key == CONFIG_FLAG {
            // A file cannot name another one: the file read is a comment.
            out += &format!("# settings file: {} ({})\n", s.values[0], s.source);
            continue;
        }
        let value = if s.repeatable {
            let items: Vec<String> = s.values.iter().map(|v| toml_scalar(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            toml_scalar(&s.values[0])
        };
        out += &format!("{} = {value}  # {}\n", s.key, s.source);
    }
    out
}

/// A number or boolean as itself, anything else as a quoted TOML string (the file reader
/// takes either form for any flag).
fn toml_scalar(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_owned()
    } else {
        toml_edit::Value::from(v).to_string().trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches, Parser};

    /// The kinds of flag the run arguments have or may get: a value, a repeatable value, a
    /// switch.
    #[derive(Parser, Debug)]
    struct Demo {
        #[command(flatten)]
        run: DemoArgs,
    }

    #[derive(Args, Debug)]
    struct DemoArgs {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
        fan_out: u32,
        #[arg(long = "seed")]
        seeds: Vec<String>,
        #[arg(long)]
        verbose: bool,
    }

    fn parse(file: &str, argv: &[&str]) -> Result<DemoArgs> {
        use clap::CommandFactory;
        let cmd = with_env(Demo::command());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, file).unwrap();
        let file = load(&path, &cmd)?;
        let mut argv: Vec<&str> = argv.to_vec();
        argv.insert(0, "demo");
        let m = apply(cmd, &file).try_get_matches_from(argv)?;
        Ok(Demo::from_arg_matches(&m)?.run)
    }

    #[test]
    fn file_values_of_every_kind_are_defaults_under_the_flags() {
        let a = parse(
            "fan_out = 5\nseed = [\"a:1\", \"b:2\"]\nverbose = true\n",
            &[],
        )
        .unwrap();
        assert_eq!((a.fan_out, a.seeds.len(), a.verbose), (5, 2, true));
        let a = parse(
            "fan-out = 5\nverbose = true\n",
            &["--fan-out", "7", "--seed", "c:3"],
        )
        .unwrap();
        assert_eq!(
            (a.fan_out, a.seeds, a.verbose),
            (7, vec!["c:3".to_owned()], true)
        );
        let e = parse("fan-out = 10\n", &[]).unwrap_err().to_string();
        assert!(
            e.contains("line 1, key `fan-out`: invalid value '10'"),
            "{e}"
        );
        let e = parse("verbose = \"maybe\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("key `verbose`: invalid value 'maybe'"), "{e}");
    }

    #[test]
    fn variable_names_follow_the_flags() {
        assert_eq!(env_name("data-dir"), "GOSSIP_DATA_DIR");
        use clap::CommandFactory;
        let cmd = with_env(Demo::command());
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(envs, ["GOSSIP_FAN_OUT", "GOSSIP_SEED", "GOSSIP_VERBOSE"]);
    }
}
