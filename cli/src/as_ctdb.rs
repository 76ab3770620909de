//! `ipfailover` called as `ctdb`: the private `ctdb` that clusterd's lock
//! helpers and failoverd's hooks find first on their `PATH` is a symlink to
//! this command ([`config::ctdb_shim`]). Called by that name it answers
//! ctdb's commands as `ctdb` (usage texts name `ctdb`), and takes its run
//! directory from [`config::ctdb_shim::RUN_DIR_ENV`], which the daemon that
//! started the program set to its own node's, unless `--run-dir` is given.

use std::ffi::OsString;
use std::path::Path;

/// The command line to parse and whether the command was called as ctdb.
#[must_use]
pub fn argv() -> (Vec<OsString>, bool) {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let run_dir = std::env::var_os(config::ctdb_shim::RUN_DIR_ENV);
    prepare(argv, run_dir)
}

fn prepare(mut argv: Vec<OsString>, run_dir: Option<OsString>) -> (Vec<OsString>, bool) {
    let as_ctdb = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == config::ctdb_shim::CTDB_NAME);
    if let (true, Some(dir)) = (as_ctdb, run_dir) {
        let given = argv.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            a == "--run-dir" || a.starts_with("--run-dir=")
        });
        if !given && !dir.is_empty() {
            argv.insert(1, OsString::from("--run-dir"));
            argv.insert(2, dir);
        }
    }
    (argv, as_ctdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn called_as_ctdb_the_run_dir_comes_from_the_environment() {
        let dir = Some(OsString::from("/run/n1"));
        assert_eq!(
            prepare(v(&["/run/n1/ctdb-bin/ctdb", "pnn"]), dir.clone()),
            (
                v(&["/run/n1/ctdb-bin/ctdb", "--run-dir", "/run/n1", "pnn"]),
                true
            )
        );
        // An explicit --run-dir wins; without the variable nothing changes.
        let given = v(&["ctdb", "--run-dir=/x", "pnn"]);
        assert_eq!(prepare(given.clone(), dir.clone()), (given, true));
        let plain = v(&["ctdb", "status"]);
        assert_eq!(prepare(plain.clone(), None), (plain, true));
        // Called as ipfailover: the variable is not looked at.
        let cli = v(&["/usr/bin/ipfailover", "pnn"]);
        assert_eq!(prepare(cli.clone(), dir), (cli, false));
    }
}
