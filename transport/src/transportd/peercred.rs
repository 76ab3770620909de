//! Who may talk to transportd's Unix socket, and with what rights: root and
//! transportd's own user are *daemons* (they may register the well-known
//! service names and send every message); members of one configured group
//! are *clients* (they may send only the requests the `ipfailover` command
//! uses, see [`super::access`]). The kernel tells us who connected (`SO_PEERCRED`: uid,
//! gid and pid of the connecting process at `connect()` time); membership is
//! checked on the primary gid and on the supplementary groups of that process
//! (from `/proc/PID/status`), so `sg`/`newgrp` and `usermod -aG` both work.
//!
//! The socket file itself is mode 0666: the credential check here is the one
//! gate, and it cannot be bypassed by file permissions or a copied socket
//! path.

use std::path::Path;

/// The local-client policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Members of this group (by gid) are allowed besides root, as clients.
    pub group: Option<(String, u32)>,
    /// transportd's own effective uid: a process running as it is trusted
    /// like root (the daemons may run as that user). 0 when transportd runs
    /// as root.
    pub daemon_uid: u32,
}

/// What an accepted local process may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Root or transportd's own user: may register any name (the
    /// well-known service names included) and send every message.
    Daemon,
    /// A member of the configured group: may register only a name that is
    /// not well known, and send only the requests of
    /// [`super::access::CLIENT_REQUESTS`] (and answers).
    Client,
}

/// The credentials of a connected process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
    /// Its process id, when the kernel reports one.
    pub pid: Option<i32>,
}

/// Why a group name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group in the group database.
    #[error("group {0:?} does not exist")]
    Unknown(String),
    /// The group database could not be read.
    #[error("cannot look up group {name:?}: {source}")]
    Lookup {
        /// The group name.
        name: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

impl Policy {
    /// A policy allowing root and this process's effective user as
    /// daemons, and the members of `group` (if given) as clients.
    ///
    /// # Errors
    /// [`GroupError`] if the group does not exist.
    pub fn new(group: Option<&str>) -> Result<Self, GroupError> {
        let daemon_uid = nix::unistd::geteuid().as_raw();
        let Some(name) = group else {
            return Ok(Policy {
                group: None,
                daemon_uid,
            });
        };
        let found = nix::unistd::Group::from_name(name).map_err(|source| GroupError::Lookup {
            name: name.to_owned(),
            source,
        })?;
        let group = found.ok_or_else(|| GroupError::Unknown(name.to_owned()))?;
        Ok(Policy {
            group: Some((name.to_owned(), group.gid.as_raw())),
            daemon_uid,
        })
    }

    /// Is a process with these credentials allowed, and as what? `Err`
    /// says why not.
    ///
    /// # Errors
    /// A human-readable refusal reason (for the log and the client).
    pub fn check(&self, cred: &Credentials) -> Result<Privilege, String> {
        if cred.uid == 0 || cred.uid == self.daemon_uid {
            return Ok(Privilege::Daemon);
        }
        if let Some((name, gid)) = &self.group {
            if cred.gid == *gid {
                return Ok(Privilege::Client);
            }
            if let Some(pid) = cred.pid {
                let status = Path::new("/proc").join(pid.to_string()).join("status");
                if supplementary_groups(&status).contains(gid) {
                    return Ok(Privilege::Client);
                }
            }
            return Err(format!(
                "uid {} (gid {}) is neither root nor a member of group {name}",
                cred.uid, cred.gid
            ));
        }
        Err(format!(
            "uid {} is not root (no --group configured)",
            cred.uid
        ))
    }
}

/// The supplementary groups listed on the `Groups:` line of a
/// `/proc/PID/status` file; empty if it cannot be read.
fn supplementary_groups(status: &Path) -> Vec<u32> {
    std::fs::read_to_string(status)
        .map(|text| parse_groups_line(&text))
        .unwrap_or_default()
}

fn parse_groups_line(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The credentials of the process at the other end of a Unix stream.
///
/// # Errors
/// The OS error of `getsockopt(SO_PEERCRED)`.
pub fn peer_credentials(stream: &tokio::net::UnixStream) -> std::io::Result<Credentials> {
    let cred = stream.peer_cred()?;
    Ok(Credentials {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_always_allowed_and_others_need_the_group() {
        let none = Policy::default();
        let root = Credentials {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let nobody = Credentials {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        assert_eq!(none.check(&root), Ok(Privilege::Daemon));
        assert!(none.check(&nobody).unwrap_err().contains("not root"));
        let grp = Policy {
            group: Some(("ipfailover".into(), 4242)),
            daemon_uid: 0,
        };
        assert!(grp.check(&nobody).unwrap_err().contains("group ipfailover"));
        let member = Credentials {
            uid: 1000,
            gid: 4242,
            pid: None,
        };
        // A group member is a client, never a daemon.
        assert_eq!(grp.check(&member), Ok(Privilege::Client));
        assert_eq!(grp.check(&root), Ok(Privilege::Daemon));
    }

    #[test]
    fn transportds_own_user_is_a_daemon() {
        let policy = Policy {
            group: Some(("ipfailover".into(), 4242)),
            daemon_uid: 998,
        };
        let own = Credentials {
            uid: 998,
            gid: 998,
            pid: None,
        };
        assert_eq!(policy.check(&own), Ok(Privilege::Daemon));
        assert_eq!(
            Policy::new(None).unwrap().daemon_uid,
            nix::unistd::geteuid().as_raw()
        );
    }

    #[test]
    fn supplementary_groups_come_from_proc_status() {
        let text = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 4242 \nNgid:\t0\n";
        assert_eq!(parse_groups_line(text), vec![4, 24, 4242]);
        assert!(parse_groups_line("Name: x\n").is_empty());
        // Our own process: root's status file exists and parses.
        let own = Path::new("/proc/self/status");
        let _ = supplementary_groups(own);
    }

    #[test]
    fn unknown_group_is_an_error() {
        let err = Policy::new(Some("no-such-group-ipf")).unwrap_err();
        assert!(err.to_string().contains("no-such-group-ipf"));
        assert_eq!(
            Policy::new(Some("root")).unwrap().group,
            Some(("root".into(), 0))
        );
    }
}
