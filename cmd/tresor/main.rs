//! The `tresor` command line (thin: parse, telemetry, call the library, map to an exit code).

use std::process::ExitCode;

use clap::Parser;
use tresor::cli::{self, Cli};

// glibc's malloc grows per-thread arenas with one mprotect call per page, which dominated
// multi-threaded manifest parsing; mimalloc does not. `sync` turns its eager arena commit off
// (tresor::cli::allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tresor::telemetry::init(cli.verbose, false);
    cli::allocator::reexec_for_command(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
