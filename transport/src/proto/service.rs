//! Addresses `(pnn, service)`, special node numbers and the well-known
//! service ids.
//!
//! A client registers a *name*: the well-known names below get their fixed id
//! (one live registration each); any other name gets an ephemeral id at or
//! above [`EPHEMERAL_BASE`].

use serde::{Deserialize, Serialize};

/// Destination node number meaning "every connected node, this one included".
pub const ALL_NODES: u32 = 0xFFFF_FFFF;
/// Destination node number meaning "the node I am connected to"; the router
/// substitutes its own pnn.
pub const LOCAL: u32 = 0xFFFF_FFFE;

/// The transport itself (transportd or the in-process router).
pub const TRANSPORT: u16 = 0;
/// Membership daemon.
pub const CLUSTERD: u16 = 1;
/// Public-IP daemon.
pub const FAILOVERD: u16 = 2;
/// Connection-tracking daemon.
pub const CONNTRACKD: u16 = 3;
/// Supervisor.
pub const MASTERD: u16 = 4;
/// Destination service meaning "every local subscriber of this frame's opcode"
/// (events only).
pub const BROADCAST_SERVICE: u16 = 0xFFFF;
/// First id handed out to clients with a name that is not well known.
pub const EPHEMERAL_BASE: u16 = 0x8000;

/// The well-known names and their fixed ids.
pub const WELL_KNOWN: &[(&str, u16)] = &[
    ("transport", TRANSPORT),
    ("clusterd", CLUSTERD),
    ("failoverd", FAILOVERD),
    ("conntrackd", CONNTRACKD),
    ("masterd", MASTERD),
];

/// Longest service name a client may register, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name a client asks to register: not empty, at most
/// [`MAX_NAME_LEN`] bytes, and not `"transport"` (service 0 is the router).
///
/// # Errors
/// A `BadRequest` [`RemoteError`](super::RemoteError) naming the problem,
/// ready to send back.
pub fn check_name(name: &str) -> Result<(), super::RemoteError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 64 bytes"
    } else if name == "transport" {
        "is reserved for the transport itself"
    } else {
        return Ok(());
    };
    Err(super::RemoteError::new(
        super::ErrorCode::BadRequest,
        format!("service name {name:?} {problem}"),
    ))
}

/// The fixed id of a well-known service name, if it is one.
pub fn well_known_id(name: &str) -> Option<u16> {
    WELL_KNOWN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, id)| *id)
}

/// The well-known name of a fixed service id, if it is one.
pub fn well_known_name(id: u16) -> Option<&'static str> {
    WELL_KNOWN.iter().find(|(_, i)| *i == id).map(|(n, _)| *n)
}

/// A node and a service on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    /// Node number (line of the nodes file), or [`ALL_NODES`] / [`LOCAL`].
    pub pnn: u32,
    /// Service id on that node, or [`BROADCAST_SERVICE`].
    pub service: u16,
}

impl Address {
    /// The address of `service` on node `pnn`.
    pub const fn new(pnn: u32, service: u16) -> Self {
        Address { pnn, service }
    }

    /// `service` on the node the caller is connected to.
    pub const fn local(service: u16) -> Self {
        Address::new(LOCAL, service)
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.pnn {
            ALL_NODES => write!(f, "all")?,
            LOCAL => write!(f, "local")?,
            pnn => write!(f, "{pnn}")?,
        }
        match (self.service, well_known_name(self.service)) {
            (BROADCAST_SERVICE, _) => write!(f, ":broadcast"),
            (_, Some(name)) => write!(f, ":{name}"),
            (id, None) => write!(f, ":{id:#06x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_names_and_ids_match() {
        for (name, id) in WELL_KNOWN {
            assert_eq!(well_known_id(name), Some(*id));
            assert_eq!(well_known_name(*id), Some(*name));
        }
        assert_eq!(well_known_id("cli"), None);
        assert_eq!(well_known_name(EPHEMERAL_BASE), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("cli").is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        for bad in ["", "transport", &"x".repeat(MAX_NAME_LEN + 1)] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.code, super::super::ErrorCode::BadRequest);
        }
    }

    #[test]
    fn addresses_display_readably() {
        assert_eq!(Address::new(2, FAILOVERD).to_string(), "2:failoverd");
        assert_eq!(
            Address::new(ALL_NODES, BROADCAST_SERVICE).to_string(),
            "all:broadcast"
        );
        assert_eq!(Address::local(0x8001).to_string(), "local:0x8001");
    }
}
