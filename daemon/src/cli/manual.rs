//! `berth completions SHELL` and `berth man`: shell completions and man pages generated from the
//! command line's own definition, so they name every subcommand and flag there is.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Args;

pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Args::command(), "berth", out);
}

/// The pages: `berth(1)`, and `berth-SUB(1)` for each subcommand.
pub fn pages() -> Vec<(String, clap::Command)> {
    let mut cmd = Args::command();
    cmd.build();
    let mut pages: Vec<(String, clap::Command)> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| {
            let name = format!("berth-{}", s.get_name());
            (name.clone(), s.clone().name(name))
        })
        .collect();
    pages.insert(0, ("berth".to_string(), cmd));
    pages
}

/// Every page into `dir` as NAME.1, or, without a directory, `berth(1)` on `out`.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let Some(dir) = dir else {
        let (_, cmd) = pages().swap_remove(0);
        clap_mangen::Man::new(cmd).render(out)?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    for (name, cmd) in pages() {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subcommands() -> Vec<String> {
        let names: Vec<String> = Args::command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        assert!(names.len() >= 5, "{names:?}");
        names
    }

    #[test]
    fn every_shell_completion_names_every_subcommand() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            for name in subcommands() {
                assert!(text.contains(&name), "{shell}: no {name}");
            }
        }
    }

    #[test]
    fn the_man_pages_name_every_subcommand_and_each_has_its_own() {
        let mut out = Vec::new();
        man(None, &mut out).expect("renders");
        let top = String::from_utf8(out).expect("utf-8");
        let dir = tempfile::tempdir().expect("tempdir");
        man(Some(dir.path()), &mut Vec::new()).expect("writes");
        for name in subcommands() {
            assert!(
                top.contains(&format!("berth\\-{name}")),
                "berth(1) names no {name}"
            );
            let page = std::fs::read_to_string(dir.path().join(format!("berth-{name}.1")))
                .unwrap_or_else(|e| panic!("berth-{name}.1: {e}"));
            assert!(page.contains(&format!(".TH berth-{name} 1")), "{page}");
        }
    }
}
