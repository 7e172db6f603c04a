//! The admin commands: one typed request and one typed answer per command, used by the admin
//! API's handlers and by the CLI alike ([`types`]).

pub mod types;
