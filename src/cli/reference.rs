//! What is generated from the clap definitions: the CLI reference (`docs/cli-reference.md`),
//! man pages (`tresor man DIR`) and shell completions (`tresor completions SHELL`).
//!
//! The reference is rendered from the same [`clap::Command`] that parses the command line, so
//! it cannot drift from it; a test (`tests/docs_fresh.rs`) fails when the committed copy is
//! stale, and `cargo run --bin tresor-crdgen -- --write` rewrites it with the other generated
//! files.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory as _;

use super::{Cli, CliError};

/// Where the CLI reference is committed, relative to the repository root.
pub const CLI_REFERENCE_PATH: &str = "docs/cli-reference.md";

/// The generated files of this module: (path relative to the repository root, content).
pub fn generated_files() -> Vec<(String, String)> {
    vec![(CLI_REFERENCE_PATH.to_string(), cli_reference())]
}

/// The CLI reference as Markdown: every subcommand with its usage, arguments (defaults,
/// environment variables, allowed values) and examples, in the order `tresor --help` lists
/// them.
pub fn cli_reference() -> String {
    let mut root = Cli::command();
    root.build();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# CLI reference\n\n<!-- Generated from the clap definitions in src/cli by \
         `cargo run --bin tresor-crdgen -- --write`; do not edit. -->\n"
    );
    let _ = writeln!(out, "{}\n", one_line(&about(&root)));
    let _ = writeln!(
        out,
        "Exit codes: 0 success, 1 a check failed (verification, policy, diff, wait), 2 an \
         error. Man pages: `tresor man DIR`; completions: `tresor completions bash|zsh|fish`.\n"
    );
    let _ = writeln!(out, "```text\n{}\n```\n", usage(&mut root));
    let globals: Vec<String> = root
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .map(|a| a.get_id().to_string())
        .collect();
    arguments(&mut out, root.get_arguments(), &[]);
    for sub in root.get_subcommands_mut() {
        if sub.is_hide_set() {
            continue;
        }
        let name = format!("tresor {}", sub.get_name());
        let _ = writeln!(out, "## `{name}`\n\n{}\n", one_line(&about(sub)));
        let _ = writeln!(out, "```text\n{}\n```\n", usage(sub));
        arguments(&mut out, sub.get_arguments(), &globals);
        if let Some(examples) = sub.get_after_help() {
            let _ = writeln!(out, "```text\n{}\n```\n", examples.to_string().trim_end());
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn about(cmd: &clap::Command) -> String {
    cmd.get_long_about()
        .or(cmd.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn usage(cmd: &mut clap::Command) -> String {
    cmd.render_usage().to_string().trim().to_string()
}

/// Joins the lines of a help text into one (table cells and headings are one line).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// A table of `args` (without `skip`, hidden ones, `--help` and `--version`).
fn arguments<'a>(out: &mut String, args: impl Iterator<Item = &'a clap::Arg>, skip: &[String]) {
    let mut rows = Vec::new();
    for arg in args {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" || skip.iter().any(|s| s == id) {
            continue;
        }
        let value = arg
            .get_value_names()
            .map(|names| {
                names
                    .iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("<{}>", id.to_uppercase()));
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let name = match (arg.get_short(), arg.get_long()) {
            (_, None) => value,
            (short, Some(long)) => {
                let mut name = match short {
                    Some(s) => format!("-{s}, --{long}"),
                    None => format!("--{long}"),
                };
                if takes_value {
                    name.push(' ');
                    name.push_str(&value);
                }
                name
            }
        };
        let mut text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut notes = Vec::new();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() && takes_value {
            notes.push(format!("one of {}", values.join(", ")));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && takes_value {
            notes.push(format!("default `{}`", defaults.join(",")));
        }
        if let Some(env) = arg.get_env() {
            notes.push(format!("env `{}`", env.to_string_lossy()));
        }
        if !notes.is_empty() {
            text = format!("{} ({})", text.trim_end_matches('.'), notes.join("; "));
        }
        rows.push(format!("| `{}` | {} |", cell(&name), cell(&text)));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "| argument | description |\n|---|---|");
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
    out.push('\n');
}

/// Arguments of `tresor completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tresor completions bash > /etc/bash_completion.d/tresor
  tresor completions zsh > ~/.zfunc/_tresor      # with fpath+=(~/.zfunc) in ~/.zshrc
  tresor completions fish > ~/.config/fish/completions/tresor.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `tresor man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tresor man /usr/local/share/man/man1 && man tresor-push")]
pub struct ManArgs {
    /// Directory to write tresor.1 and tresor-SUBCOMMAND.1 into (created if missing).
    pub dir: PathBuf,
}

/// `tresor completions SHELL`: the script on stdout.
pub fn run_completions(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let script = completions(args.shell);
    std::io::stdout()
        .write_all(&script)
        .map_err(|source| CliError::Write {
            path: PathBuf::from("<stdout>"),
            source,
        })?;
    Ok(ExitCode::SUCCESS)
}

/// `tresor man DIR`: writes the pages and prints their paths, one per line.
pub fn run_man(args: ManArgs) -> Result<ExitCode, CliError> {
    for path in write_man_pages(&args.dir)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a man page for `tresor` and one per subcommand (`tresor-push.1`, …) into `dir`
/// (created if missing). Returns the files written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| CliError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut root = Cli::command();
    root.build();
    let mut pages = vec![("tresor".to_string(), root.clone())];
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tresor-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = Vec::new();
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(io(&path))?;
        std::fs::write(&path, page).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The completion script of `shell` for `tresor`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tresor", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn the_reference_lists_every_subcommand_with_its_flags_and_examples() {
        let text = cli_reference();
        for sub in Cli::command().get_subcommands() {
            assert!(
                text.contains(&format!("## `tresor {}`", sub.get_name())),
                "{} missing",
                sub.get_name()
            );
        }
        assert!(text.contains("| `--sign-key <KEY>` |"), "{text}");
        assert!(text.contains("env `TRESOR_CREDS`"), "{text}");
        assert!(text.contains("tresor push rendered/ oci://"), "{text}");
    }

    #[test]
    fn man_pages_are_written_for_tresor_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"tresor.1".to_string()), "{names:?}");
        assert!(names.contains(&"tresor-sync.1".to_string()), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("tresor-push.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains("tresor\\-push"), "{page}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _tresor"), "{bash}");
        assert!(bash.contains("sync"));
        let fish = String::from_utf8(completions(clap_complete::Shell::Fish)).unwrap();
        assert!(fish.contains("complete -c tresor"), "{fish}");
    }

    /// Splits a shell command line of an example: single and double quotes, no
    /// expansions; stops at a comment, a redirection or `&&`.
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quote = None;
        let mut in_word = false;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (None, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        let end = words
            .iter()
            .position(|w| w.starts_with('#') || w == ">" || w == "&&")
            .unwrap_or(words.len());
        words.truncate(end);
        words
    }

    /// Every example in `--help` is a command line tresor accepts.
    #[test]
    fn every_help_example_parses() {
        let mut checked = 0;
        for sub in Cli::command().get_subcommands() {
            let Some(help) = sub.get_after_help() else {
                continue;
            };
            let help = help.to_string();
            let mut line = String::new();
            for raw in help.lines() {
                let raw = raw.trim();
                if line.is_empty() && !raw.starts_with("tresor ") {
                    continue;
                }
                match raw.strip_suffix('\\') {
                    Some(start) => {
                        line.push_str(start);
                        line.push(' ');
                    }
                    None => {
                        line.push_str(raw);
                        let args = words(&line);
                        if let Err(e) = Cli::try_parse_from(&args) {
                            panic!(
                                "example {line:?} of `tresor {}` does not parse: {e}",
                                sub.get_name()
                            );
                        }
                        checked += 1;
                        line.clear();
                    }
                }
            }
        }
        assert!(checked >= 15, "only {checked} examples found");
    }
}
