//! The `tresor` command line (thin: parse, telemetry, call the library, map to an exit code).
fn main() {}
