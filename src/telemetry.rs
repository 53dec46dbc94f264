//! Diagnostics on stderr through `tracing`; results never go here.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber: `TRESOR_LOG` (an env-filter directive) wins, otherwise
/// `verbose` picks warn/info/debug/trace. `json` selects JSON lines (for the puller).
pub fn init(verbose: u8, json: bool) {
    // rustls logs a refused certificate at error level in its own words (`UnknownIssuer`);
    // the registry error says the same thing with what to do about it, so below -vv rustls
    // stays quiet.
    let default = match verbose {
        0 => "warn,rustls=off",
        1 => "info,rustls=off",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("TRESOR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in files, pipes or CI logs.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.without_time().try_init()
    };
}
