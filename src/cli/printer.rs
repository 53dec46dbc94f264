//! Results go to stdout, as text or JSON; progress and diagnostics go to stderr via tracing.

use std::io::Write;

use serde::Serialize;

/// Output format of results (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Writes command results to stdout in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: Format,
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    /// The chosen format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Prints `value` as pretty JSON in JSON mode, or `text()` in text mode.
    pub fn result<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let out = match self.format {
            Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
            Format::Text => text(),
        };
        // A closed stdout (e.g. `| head`) is not an error worth reporting.
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }

    /// A note for the user on stderr (text mode and JSON mode alike, never on stdout).
    pub fn note(&self, message: impl AsRef<str>) {
        let _ = writeln!(std::io::stderr().lock(), "{}", message.as_ref());
    }
}
