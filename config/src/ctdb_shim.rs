//! A `ctdb` command for the programs ipfailover runs: CTDB's cluster-lock
//! helpers (clusterd) and event hooks (failoverd) call `ctdb pnn`, `ctdb
//! status`, `ctdb ip`, ... and expect ctdb's answers. Nothing named `ctdb`
//! is installed system-wide: each node's run directory gets a private
//! directory, `<run_dir>/ctdb-bin`, holding one symlink `ctdb` to the
//! `ipfailover` command, which answers in ctdb's syntax when it is called
//! by that name (it dispatches on its program name). The child's `PATH`
//! starts with that directory, and [`RUN_DIR_ENV`] tells the command which
//! node's sockets to use (docs/clusterd.md, "The cluster lock").

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that gives `ipfailover`, called as `ctdb`, its
/// run directory (the `--run-dir` of the node whose daemon started it).
pub const RUN_DIR_ENV: &str = "IPFAILOVER_RUN_DIR";

/// The private directory's name inside the run directory.
pub const SHIM_DIR: &str = "ctdb-bin";

/// The name the `ipfailover` command answers to as ctdb.
pub const CTDB_NAME: &str = "ctdb";

/// Why the private `ctdb` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No `ipfailover` command was found.
    #[error(
        "no ipfailover command found (looked next to {exe}, in {package} and on PATH): \
         programs run by this daemon see no ctdb command"
    )]
    NoCli {
        /// The running executable.
        exe: String,
        /// Where the package installs it.
        package: String,
    },
    /// The directory or the symlink could not be made.
    #[error("cannot make {path}: {source}")]
    Io {
        /// What could not be made.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Finds the `ipfailover` command: next to the running executable (a build
/// directory, or masterd's single process), else where the package puts
/// it relative to the daemons (`/usr/libexec/ipfailover/X` →
/// `/usr/bin/ipfailover`), else on `PATH`.
///
/// # Errors
///
/// [`ShimError::NoCli`] when none of them exists.
pub fn find_cli() -> Result<PathBuf, ShimError> {
    let exe = std::env::current_exe().ok();
    let mut candidates = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join("ipfailover"));
        if let Some(prefix) = dir.parent().and_then(Path::parent) {
            candidates.push(prefix.join("bin").join("ipfailover"));
        }
    }
    let package = candidates
        .get(1)
        .map_or_else(String::new, |p| p.display().to_string());
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("ipfailover")));
    }
    candidates
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| ShimError::NoCli {
            exe: exe.map_or_else(|| "?".into(), |e| e.display().to_string()),
            package,
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes `<run_dir>/ctdb-bin/ctdb` a symlink to `cli` (atomically replacing
/// whatever was there: two daemons of a node may do it at once) and returns
/// the directory.
///
/// # Errors
///
/// [`ShimError::Io`] when the directory or the link cannot be made.
pub fn prepare(run_dir: &Path, cli: &Path) -> Result<PathBuf, ShimError> {
    let dir = run_dir.join(SHIM_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ShimError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let link = dir.join(CTDB_NAME);
    if std::fs::read_link(&link).is_ok_and(|t| t == cli) {
        return Ok(dir);
    }
    let tmp = dir.join(format!(".{CTDB_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(cli, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(&link)(e)
    })?;
    Ok(dir)
}

/// The environment of a child that should see the private `ctdb`: `PATH`
/// with `dir` first (then this process's `PATH`, or the usual system
/// directories without one), and [`RUN_DIR_ENV`].
#[must_use]
pub fn child_env(dir: &Path, run_dir: &Path) -> Vec<(OsString, OsString)> {
    let rest = std::env::var_os("PATH").unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    });
    let mut path = OsString::from(dir.as_os_str());
    if !rest.is_empty() {
        path.push(":");
        path.push(rest);
    }
    vec![
        (OsString::from("PATH"), path),
        (OsString::from(RUN_DIR_ENV), run_dir.as_os_str().to_owned()),
    ]
}

/// [`find_cli`], [`prepare`] and [`child_env`] together: the environment
/// for the children of a daemon whose node uses `run_dir`.
///
/// # Errors
///
/// As [`find_cli`] and [`prepare`].
pub fn setup(run_dir: &Path) -> Result<Vec<(OsString, OsString)>, ShimError> {
    let cli = find_cli()?;
    let dir = prepare(run_dir, &cli)?;
    Ok(child_env(&dir, run_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_links_ctdb_to_the_cli_and_replaces_a_stale_link() {
        let run = std::env::temp_dir().join(format!("ctdb-shim-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let dir = prepare(&run, Path::new("/nonexistent/old")).unwrap();
        assert_eq!(dir, run.join(SHIM_DIR));
        let dir = prepare(&run, Path::new("/usr/bin/ipfailover")).unwrap();
        assert_eq!(
            std::fs::read_link(dir.join("ctdb")).unwrap(),
            PathBuf::from("/usr/bin/ipfailover")
        );
        let env = child_env(&dir, &run);
        let path = env.iter().find(|(k, _)| k == "PATH").unwrap().1.clone();
        assert!(path.to_string_lossy().starts_with(&*dir.to_string_lossy()));
        assert!(env
            .iter()
            .any(|(k, v)| k == RUN_DIR_ENV && v == run.as_os_str()));
        std::fs::remove_dir_all(&run).unwrap();
    }
}
