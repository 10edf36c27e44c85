//! `--config FILE` (or `BERTH_CONFIG`) for both binaries: a flat TOML file whose keys are flag
//! names (`token-file = "/etc/berth/token"`, `insecure = true`, `peer = ["1=a:4523", "2=b:4523"]`).
//! A key becomes that flag on the command line unless the command line or the flag's `BERTH_*`
//! variable already gives it, so the precedence is command line > environment > file > default.
//! It lives here because this is the one crate both binaries depend on.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {msg}", path.display())]
    Read { path: PathBuf, msg: String },
    #[error("config file {}: unknown key `{key}` (keys are flag names, such as token-file)", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {}: key `{key}`: {msg}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        msg: String,
    },
}

/// `args` (the program name first) with the config file's keys appended as flags; `args`
/// unchanged without `--config` or `BERTH_CONFIG`. `cmd` is the binary's clap command.
pub fn args(cmd: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let read = |msg: String| ConfigError::Read {
        path: path.clone(),
        msg,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| read(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| read(e.to_string()))?;
    // Built, so every flag's action and arity are final (a derive leaves some implied).
    let mut built = cmd.clone();
    built.build();
    let cmd = &built;
    let active = active_path(cmd, &args);
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let given = &args[1..end];
    let mut extra = Vec::new();
    for (key, value) in &table {
        let known = key != "config" && key != "help" && key != "version" && any_long(cmd, key);
        if !known {
            return Err(ConfigError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
            });
        }
        // A key of another subcommand's flag: this one does not take it.
        let Some(arg) = active
            .iter()
            .flat_map(|c| c.get_arguments())
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            continue;
        };
        if on_command_line(arg, given)
            || arg.get_env().is_some_and(|e| std::env::var_os(e).is_some())
        {
            continue;
        }
        let bad = |msg: &str| ConfigError::Value {
            path: path.clone(),
            key: key.clone(),
            msg: msg.to_string(),
        };
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
            );
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    extra.push(OsString::from(format!("--{key}")));
                }
            }
            _ if !takes_value => return Err(bad("this flag takes true or false")),
            toml::Value::Array(items) => {
                for v in items {
                    extra.push(OsString::from(format!(
                        "--{key}={}",
                        scalar(v).ok_or_else(|| bad("a list holds strings or numbers"))?
                    )));
                }
            }
            v => {
                let s = scalar(v).ok_or_else(|| bad("a value is a string, number or boolean"))?;
                extra.push(OsString::from(format!("--{key}={s}")));
            }
        }
    }
    let mut out = args;
    let at = out.iter().position(|a| a == "--").unwrap_or(out.len());
    out.splice(at..at, extra);
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `--config FILE`, `--config=FILE`, else `BERTH_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1).take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("BERTH_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The command and the subcommands the command line names, outermost first.
fn active_path<'c>(cmd: &'c clap::Command, args: &[OsString]) -> Vec<&'c clap::Command> {
    let mut path = vec![cmd];
    for a in args.iter().skip(1).take_while(|a| *a != "--") {
        let Some(a) = a.to_str() else { continue };
        let cur = path[path.len() - 1];
        if let Some(sub) = cur.find_subcommand(a) {
            path.push(sub);
        }
    }
    path
}

fn any_long(cmd: &clap::Command, key: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_long() == Some(key))
        || cmd.get_subcommands().any(|s| any_long(s, key))
}

fn on_command_line(arg: &clap::Arg, given: &[OsString]) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short().map(|s| format!("-{s}"));
    given.iter().filter_map(|g| g.to_str()).any(|g| {
        long.as_deref()
            .is_some_and(|l| g == l || g.strip_prefix(l).is_some_and(|r| r.starts_with('=')))
            || short.as_deref().is_some_and(|s| g.starts_with(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cmd() -> Command {
        Command::new("b")
            .arg(Arg::new("config").long("config").global(true))
            .subcommand(
                Command::new("agent")
                    .arg(Arg::new("listen").long("listen").default_value("d"))
                    .arg(
                        Arg::new("unset")
                            .long("unset")
                            .env("BERTH_TEST_NEVER_SET_4711"),
                    )
                    // An environment variable every test process has: the environment wins.
                    .arg(Arg::new("path").long("path").env("PATH"))
                    .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
                    .arg(Arg::new("peer").long("peer").action(ArgAction::Append)),
            )
            .subcommand(Command::new("control").arg(Arg::new("state").long("state")))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn run(f: &tempfile::NamedTempFile, line: &[&str]) -> Result<clap::ArgMatches, ConfigError> {
        let mut a: Vec<OsString> = vec!["b".into(), "--config".into(), f.path().into()];
        a.extend(line.iter().map(OsString::from));
        let a = args(&cmd(), a)?;
        Ok(cmd().try_get_matches_from(a).unwrap())
    }

    fn get(m: &clap::ArgMatches, id: &str) -> Option<String> {
        m.subcommand().unwrap().1.get_one::<String>(id).cloned()
    }

    #[test]
    fn command_line_then_environment_then_file_then_default() {
        let f = file("listen = \"file\"\nunset = \"file\"\npath = \"file\"\nstate = \"s\"\n");
        let m = run(&f, &["agent", "--listen=cli"]).unwrap();
        assert_eq!(get(&m, "listen").as_deref(), Some("cli"));
        assert_eq!(get(&m, "unset").as_deref(), Some("file"));
        assert_ne!(get(&m, "path").as_deref(), Some("file"));
        assert!(get(&m, "path").is_some());
        let m = run(&file(""), &["agent"]).unwrap();
        assert_eq!(get(&m, "listen").as_deref(), Some("d"));
        let m = run(&f, &["agent", "--listen", "cli2"]).unwrap();
        assert_eq!(get(&m, "listen").as_deref(), Some("cli2"));
        let m = run(&f, &["agent"]).unwrap();
        assert_eq!(get(&m, "listen").as_deref(), Some("file"));
    }

    #[test]
    fn booleans_and_lists() {
        let f = file("quiet = true\npeer = [\"1=a:1\", \"2=b:2\"]\n");
        let m = run(&f, &["agent"]).unwrap();
        let sub = m.subcommand().unwrap().1;
        assert!(sub.get_flag("quiet"));
        let peers: Vec<_> = sub.get_many::<String>("peer").unwrap().cloned().collect();
        assert_eq!(peers, ["1=a:1", "2=b:2"]);
        let e = run(&file("quiet = \"yes\"\n"), &["agent"]).unwrap_err();
        assert!(e.to_string().contains("key `quiet`"), "{e}");
    }

    #[test]
    fn an_unknown_key_names_itself_and_the_file() {
        let f = file("listen = \"x\"\ntoken-fil = \"/t\"\n");
        let e = run(&f, &["agent"]).unwrap_err().to_string();
        assert!(e.contains("unknown key `token-fil`"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let a = vec![
            "b".into(),
            "--config=/nonexistent/berth.toml".into(),
            "agent".into(),
        ];
        let e = args(&cmd(), a).unwrap_err().to_string();
        assert!(
            e.contains("cannot read config file /nonexistent/berth.toml"),
            "{e}"
        );
    }
}
