//! The tresor command line.
