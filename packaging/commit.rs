// The git commit for `--version`, shared by the build scripts of `berth` (daemon/build.rs) and
// `berth-volume` (volume-driver/build.rs), which `include!` it. `BERTH_COMMIT` set at build
// time wins (a build from a tarball); outside a git checkout, or without git, it is `unknown`.

use std::process::Command;


fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_COMMIT");
    let commit = std::env::var("BERTH_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BERTH_COMMIT={commit}");
    // Rebuilt when HEAD moves: in a worktree `.git` is a file, so git names the paths.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(r) =
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r]))
    {
        println!("cargo:rerun-if-changed={r}");
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        println!("cargo:rerun-if-changed={packed}");
    }
}
