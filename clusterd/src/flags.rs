//! Node flags with CTDB's bit values and display names.
//!
//! The type lives in [`transport::msg::cluster`] (it crosses to failoverd and
//! the CLI); this module re-exports it for clusterd's own code.

pub use transport::msg::cluster::NodeFlags;
