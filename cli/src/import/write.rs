//! Writing the new configuration directory all at once: every file goes
//! into a temporary directory beside OUT, which is checked with the
//! configuration readers and only then renamed to OUT, so OUT is never
//! half written. An OUT that holds anything but the ipfailover package's
//! untouched examples is replaced only with `--force`, and is kept as
//! `OUT.before-import` (or `.before-import.N`).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ImportError;

/// The example `ipfailover.toml` the Debian package installs in
/// /etc/ipfailover: replacing it loses nothing of the operator's.
const PACKAGED_TOML: &str = include_str!("../../../packaging/etc/ipfailover.toml");
/// The package's `events/README`.
const PACKAGED_EVENTS_README: &str = include_str!("../../../packaging/etc/events/README");

/// What is at OUT before the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Nothing.
    Absent,
    /// An empty directory.
    Empty,
    /// Only the package's untouched example files.
    Pristine,
    /// Something of the operator's.
    Occupied,
}

/// One file of the new directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path relative to OUT (`nodes`, `events/99.x.script`).
    pub name: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> ImportError + 'a {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// What is at `out`.
///
/// # Errors
///
/// [`ImportError::Io`] when it exists but cannot be read, or is not a
/// directory.
pub fn state(out: &Path) -> Result<OutState, ImportError> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OutState::Absent),
        Err(e) => return Err(io(out, "cannot read")(e)),
    };
    let mut names: Vec<String> = Vec::new();
    for e in entries {
        let e = e.map_err(io(out, "cannot read"))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(OutState::Empty);
    }
    let same = |p: &Path, text: &str| std::fs::read(p).is_ok_and(|b| b == text.as_bytes());
    let pristine = names.iter().all(|n| match n.as_str() {
        "ipfailover.toml" => same(&out.join(n), PACKAGED_TOML),
        "events" => std::fs::read_dir(out.join(n)).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .all(|e| e.file_name() == "README" && same(&e.path(), PACKAGED_EVENTS_README))
        }),
        _ => false,
    });
    Ok(if pristine {
        OutState::Pristine
    } else {
        OutState::Occupied
    })
}

/// Writes `files` as the directory `out` (see the module doc); `check`
/// runs on the finished temporary directory before it becomes `out`.
/// Returns where the previous `out` was kept, if it was.
///
/// # Errors
///
/// [`ImportError::Io`] for any file system error (nothing is left behind:
/// the temporary directory is removed and a moved `out` is put back), or
/// what `check` returns.
pub fn commit(
    out: &Path,
    files: &[File],
    before: OutState,
    check: impl FnOnce(&Path) -> Result<(), ImportError>,
) -> Result<Option<PathBuf>, ImportError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = out
        .file_name()
        .map_or_else(|| "ipfailover".into(), |n| n.to_string_lossy().into_owned());
    std::fs::create_dir_all(&parent).map_err(io(&parent, "cannot create"))?;
    let tmp = parent.join(format!(".{base}.import-{}", std::process::id()));
    // A left-over of an earlier run of this process id: ours by its name.
    let _ = std::fs::remove_dir_all(&tmp);
    let result = fill(&tmp, files).and_then(|()| check(&tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let swapped = swap(out, &tmp, &parent, &base, before);
    if swapped.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    swapped
}

fn fill(tmp: &Path, files: &[File]) -> Result<(), ImportError> {
    std::fs::create_dir(tmp).map_err(io(tmp, "cannot create"))?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io(tmp, "cannot chmod"))?;
    for f in files {
        let path = tmp.join(&f.name);
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io(dir, "cannot create"))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(dir, "cannot chmod"))?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&path)
            .map_err(io(&path, "cannot create"))?;
        // The mode given to open is reduced by the umask: set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(io(&path, "cannot chmod"))?;
        file.write_all(&f.bytes)
            .and_then(|()| file.sync_all())
            .map_err(io(&path, "cannot write"))?;
    }
    Ok(())
}

fn swap(
    out: &Path,
    tmp: &Path,
    parent: &Path,
    base: &str,
    before: OutState,
) -> Result<Option<PathBuf>, ImportError> {
    match before {
        OutState::Absent => {}
        OutState::Empty => std::fs::remove_dir(out).map_err(io(out, "cannot replace"))?,
        OutState::Pristine => {
            let _ = std::fs::remove_file(out.join("events/README"));
            let _ = std::fs::remove_dir(out.join("events"));
            let _ = std::fs::remove_file(out.join("ipfailover.toml"));
            std::fs::remove_dir(out).map_err(io(out, "cannot replace"))?;
        }
        OutState::Occupied => {
            let backup = (0..100)
                .map(|n| {
                    parent.join(if n == 0 {
                        format!("{base}.before-import")
                    } else {
                        format!("{base}.before-import.{n}")
                    })
                })
                .find(|p| std::fs::symlink_metadata(p).is_err())
                .ok_or_else(|| ImportError::Io {
                    path: parent.join(format!("{base}.before-import")),
                    what: "cannot keep the old directory (100 earlier copies exist)",
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                })?;
            std::fs::rename(out, &backup).map_err(io(out, "cannot move aside"))?;
            if let Err(e) = std::fs::rename(tmp, out) {
                let _ = std::fs::rename(&backup, out);
                return Err(io(out, "cannot write")(e));
            }
            return Ok(Some(backup));
        }
    }
    std::fs::rename(tmp, out).map_err(io(out, "cannot write"))?;
    Ok(None)
}
