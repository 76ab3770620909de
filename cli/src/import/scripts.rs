//! CTDB's legacy event scripts (`events/legacy/NN.NAME.script`, enabled
//! when executable, as ctdb-eventd decides: a dangling link is disabled)
//! and their options (`script.options`, `events/legacy/*.options`).
//!
//! CTDB's own scripts are known by name and each gets its rule: built into
//! ipfailover (10.interface), not needed (00.ctdb, 01.reclock), or not
//! imported with what to do instead. Any other enabled script is a site's
//! own: it is copied to `events/` **without** its execute bit (failoverd
//! runs only executable hooks), because ipfailover runs hooks only for
//! `takeip`, `releaseip`, `updateip` and `ipreallocated` (with CTDB's
//! arguments) and without CTDB's environment; the report says what the
//! script uses that ipfailover does not give it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::report::Line;
use super::ImportError;

/// A hook to write: its name under `events/` and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// File name under `events/`.
    pub name: String,
    /// Content.
    pub bytes: Vec<u8>,
}

const SERVICE: &str = "it starts, stops and monitors a service: let systemd run the service, and check it with [cluster] health_command so that an unhealthy node gives its addresses away";

/// What becomes of one of CTDB's own scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// ipfailover does it itself: how.
    Builtin(&'static str),
    /// Not needed: why.
    NotNeeded(&'static str),
    /// Not imported: what to do instead.
    Instead(&'static str),
}

/// The rule for CTDB's own script `name` (`10.interface`), or `None` for a
/// site's own script.
fn rule(name: &str) -> Option<Rule> {
    use Rule::{Builtin, Instead as Err, NotNeeded};
    Some(match name {
        "00.ctdb" => NotNeeded("ctdbd's own housekeeping of tunables and databases"),
        "01.reclock" => Builtin("clusterd watches its own cluster_lock"),
        "10.interface" => Builtin("failoverd adds and removes the addresses, follows interface links (an address leaves only a down interface, as with CTDB_PARTIALLY_ONLINE_INTERFACES=yes), announces them and resets the connections of released ones"),
        "05.system" => Err("it monitors file system and memory use: check them with [cluster] health_command"),
        "20.multipathd" => Err("it monitors multipath devices: check them with [cluster] health_command"),
        "06.nfs" | "60.nfs" => Err("it runs the NFS server and CTDB's NFS callout on takeip/releaseip for statd: run the NFS server under systemd, check it with [cluster] health_command, and write takeip/releaseip hooks if you need the callout"),
        "11.natgw" => Err("NAT gateway: ipfailover has no NAT gateway; keep a static route or a NAT rule of your own"),
        "11.routing" | "13.per_ip_routing" => Err("routes per interface or per public address: ipfailover adds no routes; write takeip/releaseip/updateip hooks that add them"),
        "15.network" => Err("network setup of ctdbd: configure the network with the system's tools"),
        "91.lvs" => Err("LVS load balancing: ipfailover has no LVS support"),
        "95.database" => NotNeeded("ctdbd's databases"),
        "70.iscsi" => Err("it starts iSCSI targets on ipreallocated: write an ipreallocated hook that does the same"),
        "31.clamd" | "40.vsftpd" | "41.httpd" | "46.update-keytabs" | "47.samba-dcerpcd"
        | "48.netbios" | "49.winbind" | "50.samba" => Err(SERVICE),
        _ => return None,
    })
}

/// The events a script names in a `case` pattern (`takeip)`, `monitor|`).
fn events_used(text: &str) -> Vec<&'static str> {
    const EVENTS: &[&str] = &[
        "init",
        "setup",
        "startup",
        "startrecovery",
        "recovered",
        "takeip",
        "releaseip",
        "updateip",
        "ipreallocated",
        "startipreallocate",
        "monitor",
        "shutdown",
    ];
    EVENTS
        .iter()
        .filter(|e| {
            text.match_indices(**e).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                let after = text[i + e.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                    && matches!(after, Some(')' | '|'))
            })
        })
        .copied()
        .collect()
}

/// What a site's own script uses that an ipfailover hook does not get.
fn custom_notes(text: &str) -> String {
    const HOOK_EVENTS: &[&str] = &["takeip", "releaseip", "updateip", "ipreallocated"];
    let used = events_used(text);
    let (run, not_run): (Vec<&str>, Vec<&str>) = used.iter().partition(|e| HOOK_EVENTS.contains(e));
    let mut notes = Vec::new();
    if !run.is_empty() {
        notes.push(format!("ipfailover will call it for {}", run.join(", ")));
    }
    if !not_run.is_empty() {
        notes.push(format!("never for {} (no such events)", not_run.join(", ")));
    }
    if text.contains("CTDB_BASE") || text.contains("/functions") {
        notes.push("it loads CTDB's functions (CTDB_BASE), which a hook does not get".into());
    }
    if text.lines().any(|l| {
        let l = l.trim_start();
        !l.starts_with('#') && (l.contains("ctdb ") || l.contains("$CTDB "))
    }) {
        notes.push("it runs the ctdb command: use ipfailover's".into());
    }
    notes.join("; ")
}

/// Reads `DIR/events/legacy` and reports each script; returns the hooks to
/// write.
///
/// # Errors
///
/// [`ImportError::Io`] when the directory exists but cannot be read, or a
/// site's script cannot be read.
pub fn scan(dir: &Path, lines: &mut Vec<Line>) -> Result<Vec<Hook>, ImportError> {
    let legacy = dir.join("events/legacy");
    let entries = match std::fs::read_dir(&legacy) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            lines.push(Line::ignored("events/legacy", "absent", "no event scripts"));
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(ImportError::Io {
                path: legacy,
                what: "cannot read",
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut hooks = Vec::new();
    for file in &names {
        let at = format!("events/legacy/{file}");
        let path = legacy.join(file);
        if let Some(script) = script_name(file) {
            let link = std::fs::read_link(&path).ok();
            let enabled = std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o100 != 0);
            if !enabled {
                let why = match &link {
                    Some(t) if !path.exists() => format!(
                        "a link to {} which is not on this host: ctdb counts it as disabled",
                        t.display()
                    ),
                    _ => "disabled in CTDB: not executable".into(),
                };
                lines.push(Line::ignored(at, "disabled", why));
                continue;
            }
            match rule(script) {
                Some(Rule::Builtin(how)) => {
                    lines.push(Line::mapped(
                        at,
                        "enabled",
                        format!("built into ipfailover: {how}"),
                    ));
                }
                Some(Rule::NotNeeded(why)) => {
                    lines.push(Line::ignored(
                        at,
                        "enabled",
                        format!("{why}: not needed by ipfailover"),
                    ));
                }
                Some(Rule::Instead(why)) => lines.push(Line::not_imported(at, "enabled", why)),
                None => {
                    let bytes = std::fs::read(&path).map_err(|source| ImportError::Io {
                        path: path.clone(),
                        what: "cannot read",
                        source,
                    })?;
                    let notes = custom_notes(&String::from_utf8_lossy(&bytes));
                    let name = format!("{script}.script");
                    lines.push(Line::mapped(
                        at,
                        "enabled (a site's own script)",
                        format!(
                            "events/{name}, NOT enabled (mode 644): review it, then chmod 755 events/{name}{}{notes}",
                            if notes.is_empty() { "" } else { ": " }
                        ),
                    ));
                    hooks.push(Hook { name, bytes });
                }
            }
        } else if file.ends_with(".options") {
            options(&path, &format!("events/legacy/{file}"), lines)?;
        } else {
            lines.push(Line::ignored(
                at,
                "present",
                "not an event script name (NN.NAME.script): ctdb ignores it",
            ));
        }
    }
    Ok(hooks)
}

/// `NN.NAME` of `NN.NAME.script` (ctdb-eventd's pattern `[0-9][0-9].*.script`).
fn script_name(file: &str) -> Option<&str> {
    let name = file.strip_suffix(".script")?;
    let b = name.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'.').then_some(name)
}

/// Reports each setting of an options file (shell `NAME=value` lines).
///
/// # Errors
///
/// [`ImportError::Io`] when it exists but cannot be read.
pub fn options(path: &Path, label: &str, lines: &mut Vec<Line>) -> Result<(), ImportError> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ImportError::Io {
                path: path.to_path_buf(),
                what: "cannot read",
                source,
            })
        }
    };
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let at = format!("{label}:{}", i + 1);
        let name = l.split('=').next().unwrap_or("").trim();
        let why = match name {
            "CTDB_PARTIALLY_ONLINE_INTERFACES" => {
                "ipfailover always behaves as =yes: only the addresses of a down interface move"
            }
            _ => "an option of CTDB's event scripts, which are not imported",
        };
        lines.push(Line::ignored(at, l, why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_follow_ctdb_eventd() {
        assert_eq!(script_name("10.interface.script"), Some("10.interface"));
        assert_eq!(script_name("1.x.script"), None);
        assert_eq!(script_name("10.interface.options"), None);
        assert_eq!(script_name("README"), None);
    }

    #[test]
    fn ctdb_scripts_have_rules_and_others_are_a_sites_own() {
        assert!(matches!(rule("10.interface"), Some(Rule::Builtin(_))));
        assert!(matches!(rule("00.ctdb"), Some(Rule::NotNeeded(_))));
        assert!(matches!(rule("11.natgw"), Some(Rule::Instead(_))));
        assert!(matches!(rule("50.samba"), Some(Rule::Instead(_))));
        assert!(rule("99.local").is_none());
    }

    #[test]
    fn a_sites_script_is_described() {
        let text = "#!/bin/sh\n. \"${CTDB_BASE}/functions\"\ncase \"$1\" in\ntakeip|releaseip)\n  logger x\n  ;;\nmonitor)\n  ctdb status >/dev/null\n  ;;\nesac\n";
        assert_eq!(events_used(text), vec!["takeip", "releaseip", "monitor"]);
        let n = custom_notes(text);
        assert!(n.contains("call it for takeip, releaseip"), "{n}");
        assert!(n.contains("never for monitor"), "{n}");
        assert!(n.contains("CTDB's functions"), "{n}");
        assert!(n.contains("ctdb command"), "{n}");
        assert_eq!(
            custom_notes("#!/bin/sh\ncase $1 in ipreallocated) true;; esac\n"),
            "ipfailover will call it for ipreallocated"
        );
    }
}
