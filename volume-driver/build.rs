//! Embeds the git commit in the binary for `--version`, so a report or a bug names the exact
//! code (the rule is shared with the other binary's build script).

include!("../packaging/commit.rs");
