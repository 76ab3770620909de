//! masterd's messages: daemon status for the CLI.
