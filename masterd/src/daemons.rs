//! The daemons of a node, as data: name, well-known service (for the
//! readiness PING) and start order.
//!
//! transportd comes first (every other daemon connects to it) and failoverd
//! last, so that a shutdown in reverse order stops failoverd first: it
//! releases its public addresses while the transport under it still runs.

use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, TRANSPORT};

use crate::MasterError;

/// One daemon masterd can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonDef {
    /// Its binary name (and its name in logs and status).
    pub name: &'static str,
    /// The service id it registers on the transport (transportd: 0, the
    /// router itself); masterd PINGs it to learn that it is up.
    pub service: u16,
}

/// Every daemon of a node, in start order.
pub const ALL: &[DaemonDef] = &[
    DaemonDef {
        name: "transportd",
        service: TRANSPORT,
    },
    DaemonDef {
        name: "clusterd",
        service: CLUSTERD,
    },
    DaemonDef {
        name: "conntrackd",
        service: CONNTRACKD,
    },
    DaemonDef {
        name: "failoverd",
        service: FAILOVERD,
    },
];

/// The daemons to run: all of them, or those named (a comma-separated list,
/// e.g. `transportd,clusterd`), always in [`ALL`]'s order.
///
/// # Errors
///
/// [`MasterError::UnknownDaemon`] for a name not in [`ALL`], and
/// [`MasterError::NoTransport`] when the list leaves transportd out (every
/// other daemon needs it).
pub fn select(names: Option<&str>) -> Result<Vec<DaemonDef>, MasterError> {
    let Some(names) = names else {
        return Ok(ALL.to_vec());
    };
    let wanted: Vec<&str> = names
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for name in &wanted {
        if !ALL.iter().any(|d| d.name == *name) {
            return Err(MasterError::UnknownDaemon {
                name: (*name).to_owned(),
            });
        }
    }
    if !wanted.contains(&"transportd") {
        return Err(MasterError::NoTransport);
    }
    Ok(ALL
        .iter()
        .filter(|d| wanted.contains(&d.name))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_every_daemon_transport_first_failover_last() {
        let all = select(None).unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.name).collect();
        assert_eq!(names, ["transportd", "clusterd", "conntrackd", "failoverd"]);
    }

    #[test]
    fn a_list_keeps_the_start_order() {
        let s = select(Some("failoverd, transportd")).unwrap();
        let names: Vec<&str> = s.iter().map(|d| d.name).collect();
        assert_eq!(names, ["transportd", "failoverd"]);
    }

    #[test]
    fn unknown_names_and_no_transport_are_refused() {
        assert!(matches!(
            select(Some("transportd,ctdbd")),
            Err(MasterError::UnknownDaemon { name }) if name == "ctdbd"
        ));
        assert!(matches!(
            select(Some("clusterd")),
            Err(MasterError::NoTransport)
        ));
    }
}
