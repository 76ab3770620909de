//! The cluster key: 32 secret bytes shared by every node, used as the Noise
//! pre-shared key of the node-to-node links.
//!
//! On disk the key is either 64 hex characters (optionally followed by a
//! newline) or exactly 32 raw bytes. Loading refuses a missing, unreadable,
//! short, malformed or world-readable file with an error naming the file;
//! [`generate`] writes a new hex key with mode 0600 and never overwrites.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of the cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be opened or read (missing, permissions...).
    #[error("cluster key file {path}: cannot read: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Others may read the file: the key is no longer secret.
    #[error(
        "cluster key file {path} is readable by other users (mode {mode:o}); run chmod 600 {path}"
    )]
    WorldReadable {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is neither 64 hex characters nor 32 raw bytes.
    #[error("cluster key file {path}: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong (too short, bad hex digit...).
        reason: String,
    },
    /// The key file to generate already exists.
    #[error("cluster key file {path} already exists; refusing to overwrite it")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// Creating or writing the new key file failed.
    #[error("cluster key file {path}: cannot write: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The 32-byte cluster key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A key from bytes (tests, benchmarks).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Reads and validates a key file.
    ///
    /// # Errors
    /// [`KeyError::Read`] if it cannot be read, [`KeyError::WorldReadable`]
    /// if "others" have read permission, [`KeyError::Malformed`] if its
    /// content is not 64 hex characters or 32 raw bytes.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode();
        if mode & 0o004 != 0 {
            return Err(KeyError::WorldReadable {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        // A key file is tiny: read at most a little more than the hex form.
        let mut content = Vec::with_capacity(80);
        Read::by_ref(&mut file)
            .take(200)
            .read_to_end(&mut content)
            .map_err(read_err)?;
        parse(&content).map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(2 * KEY_LEN);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Parses key file content: 64 hex characters (surrounding whitespace
/// allowed) or exactly 32 raw bytes.
///
/// # Errors
/// A human-readable reason.
pub fn parse(content: &[u8]) -> Result<ClusterKey, String> {
    let trimmed = content.trim_ascii();
    let looks_hex = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit);
    if looks_hex {
        if trimmed.len() != 2 * KEY_LEN {
            return Err(format!(
                "expected {} hex characters, found {}",
                2 * KEY_LEN,
                trimmed.len()
            ));
        }
        let mut key = [0u8; KEY_LEN];
        for (i, pair) in trimmed.chunks_exact(2).enumerate() {
            key[i] = (hex_digit(pair[0]) << 4) | hex_digit(pair[1]);
        }
        return Ok(ClusterKey(key));
    }
    if content.len() == KEY_LEN {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(content);
        return Ok(ClusterKey(key));
    }
    Err(format!(
        "expected {} hex characters or {KEY_LEN} raw bytes, found {} bytes{}",
        2 * KEY_LEN,
        content.len(),
        if content.len() < KEY_LEN {
            " (too short)"
        } else {
            ""
        }
    ))
}

fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0, // callers checked is_ascii_hexdigit
    }
}

/// Makes a new random key from the kernel's random source.
///
/// # Errors
/// [`KeyError::Read`] if `/dev/urandom` cannot be read.
pub fn random() -> Result<ClusterKey, KeyError> {
    let path = Path::new("/dev/urandom");
    let mut key = [0u8; KEY_LEN];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(ClusterKey(key))
}

/// Writes a new random key to `path` as hex, mode 0600; never overwrites.
///
/// # Errors
/// [`KeyError::Exists`] if the file exists, [`KeyError::Write`] if it cannot
/// be created or written, [`KeyError::Read`] if no randomness is available.
pub fn generate(path: &Path) -> Result<ClusterKey, KeyError> {
    let key = random()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ipf-key-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn generated_key_loads_back_and_is_private() {
        let dir = tmpdir("gen");
        let path = dir.join("key");
        let key = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ClusterKey::load(&path).unwrap(), key);
        assert!(matches!(generate(&path), Err(KeyError::Exists { .. })));
        assert_ne!(random().unwrap(), key, "two random keys collided");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hex_and_raw_forms_parse() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let key = parse(hex.as_bytes()).unwrap();
        assert_eq!(key.as_bytes()[1], 0x11);
        assert_eq!(key.as_bytes()[31], 0xff);
        assert_eq!(parse(&[7u8; 32]).unwrap().as_bytes(), &[7u8; 32]);
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
    }

    #[test]
    fn bad_content_is_refused_with_a_reason() {
        assert!(parse(b"abcd").unwrap_err().contains("64 hex characters"));
        assert!(parse(&[1u8; 5]).unwrap_err().contains("too short"));
        assert!(parse(b"").is_err());
        let mut bad = vec![b'a'; 63];
        bad.push(b'g');
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn missing_world_readable_and_short_files_are_refused() {
        let dir = tmpdir("bad");
        assert!(matches!(
            ClusterKey::load(&dir.join("missing")),
            Err(KeyError::Read { .. })
        ));
        let open = dir.join("open");
        std::fs::write(&open, [b'a'; 64]).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterKey::load(&open).unwrap_err();
        assert!(matches!(err, KeyError::WorldReadable { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
        let short = dir.join("short");
        std::fs::write(&short, b"abc").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            ClusterKey::load(&short),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
