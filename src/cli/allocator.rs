//! Allocator settings per command.
//!
//! The `tresor` binary allocates with mimalloc: glibc's malloc grew per-thread arenas with one
//! `mprotect` call per page, which dominated multi-threaded manifest parsing in `push`, `lint`
//! and `pull`. On Linux mimalloc commits its arenas eagerly, which a command that runs for
//! seconds never notices, but the host agent (`tresor sync`) runs for months and is idle
//! almost all the time: eager commit was most of its resident memory (`scripts/bench-sync.sh`,
//! see docs/host-agent.md). mimalloc reads its options from the environment once, when the
//! process starts, so `sync` re-executes itself with [`EAGER_COMMIT_ENV`]`=0` before it does
//! anything; every other command keeps the fast default.

use std::ffi::OsString;

use super::{Cli, Command};

/// mimalloc's option for eager arena commit (`0` off, `1` on, `2` on where the OS
/// overcommits, the default).
pub const EAGER_COMMIT_ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// The environment `command` should run with, when it differs from mimalloc's defaults:
/// lazy arena commit for the long-running, mostly idle host agent. `None` when the user set
/// the option already (their choice wins) or the command is short-lived.
pub fn idle_environment(
    command: &Command,
    set: Option<OsString>,
) -> Option<(&'static str, &'static str)> {
    match (command, set) {
        (Command::Sync(_), None) => Some((EAGER_COMMIT_ENV, "0")),
        _ => None,
    }
}

/// Re-executes this binary with the same arguments and [`idle_environment`], if `cli` asks
/// for one; returns (and the command runs as it is, with more memory) when nothing needs to
/// change or the re-execution failed, saying why at debug level.
pub fn reexec_for_command(cli: &Cli) {
    use std::os::unix::process::CommandExt as _;

    let Some((key, value)) = idle_environment(&cli.command, std::env::var_os(EAGER_COMMIT_ENV))
    else {
        return;
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!(error = %e, "cannot find the tresor binary to re-execute; keeping eager commit");
            return;
        }
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` only returns on failure (e.g. the binary was replaced by an upgrade).
    let error = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(key, value)
        .exec();
    tracing::debug!(error = %error, exe = %exe.display(), "cannot re-execute with {key}={value}; keeping eager commit");
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(args).unwrap().command
    }

    #[test]
    fn only_sync_turns_eager_commit_off_and_a_user_setting_wins() {
        let sync = command(&[
            "tresor",
            "sync",
            "oci://r/app:v1",
            "--dir",
            "d",
            "--allow-unsigned",
        ]);
        assert_eq!(idle_environment(&sync, None), Some((EAGER_COMMIT_ENV, "0")));
        assert_eq!(idle_environment(&sync, Some("1".into())), None);
        let push = command(&["tresor", "push", "dir", "oci://r/app:v1"]);
        assert_eq!(idle_environment(&push, None), None);
        let lint = command(&["tresor", "lint", "dir"]);
        assert_eq!(idle_environment(&lint, None), None);
    }
}
