//! Reading a configuration file as text, the same way for every file of the
//! configuration directory: size limit, UTF-8, line ends, control
//! characters and line length, each refused with `FILE:LINE[:COL]: what`.
//!
//! Rules (docs/configuration.md, "Errors"):
//! * a file is at most [`MAX_FILE_BYTES`] bytes;
//! * it is UTF-8 text: the first invalid byte is named by line and column;
//! * line ends are `\n` or `\r\n` (CRLF, as a Windows editor writes them, is
//!   accepted); a `\r` anywhere else is refused;
//! * in the line-based files (`nodes`, `public_addresses`): no control
//!   character other than tab, and a line is at most [`MAX_LINE_BYTES`]
//!   bytes. `ipfailover.toml` leaves those two to the TOML parser.
//!
//! Errors about a file as a whole (cannot be read, too big) name line 1, so
//! that every error has the same `FILE:LINE: ` shape for tools and tests.
//!
//! Pure except [`read`], which only opens and reads the file.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest configuration file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Longest line of a line-based file (`nodes`, `public_addresses`).
pub const MAX_LINE_BYTES: usize = 1024;

/// Why a file is not acceptable text.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The file cannot be opened or read.
    #[error("{}:1: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{}:1: larger than {max} bytes: not a configuration file", file.display())]
    TooBig {
        /// The file.
        file: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A byte sequence that is not UTF-8.
    #[error("{}:{line}:{column}: not UTF-8 text (byte 0x{byte:02x})", file.display())]
    NotUtf8 {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters) of the bad byte.
        column: usize,
        /// The first bad byte.
        byte: u8,
    },
    /// A `\r` not followed by `\n`.
    #[error("{}:{line}:{column}: carriage return (\\r) that does not end a line (line ends are \\n or \\r\\n)", file.display())]
    BareCarriageReturn {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A control character (other than tab) in a line-based file.
    #[error("{}:{line}:{column}: control character U+{code:04X} (only tab is allowed)", file.display())]
    ControlCharacter {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The character's code.
        code: u32,
    },
    /// A line longer than [`MAX_LINE_BYTES`] in a line-based file.
    #[error("{}:{line}: line is {len} bytes long, at most {max} are allowed", file.display())]
    LongLine {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl TextError {
    /// True when the file does not exist (callers for which the file is
    /// optional treat that as "empty").
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, TextError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads `file` as UTF-8 text of at most [`MAX_FILE_BYTES`] bytes.
///
/// # Errors
///
/// [`TextError::Io`], [`TextError::TooBig`] or [`TextError::NotUtf8`].
pub fn read(file: &Path) -> Result<String, TextError> {
    let io = |source| TextError::Io {
        file: file.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(file).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte more than the limit tells "too big" from "exactly the limit".
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(TextError::TooBig {
            file: file.to_path_buf(),
            max: MAX_FILE_BYTES,
        });
    }
    decode(bytes, file)
}

/// `bytes` as a string, or the position of the first invalid byte.
///
/// # Errors
///
/// [`TextError::NotUtf8`].
pub fn decode(bytes: Vec<u8>, file: &Path) -> Result<String, TextError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // Everything before `at` is valid UTF-8.
        let before = std::str::from_utf8(bytes.get(..at).unwrap_or_default()).unwrap_or_default();
        let (line, column) = line_col(before, before.len());
        TextError::NotUtf8 {
            file: file.to_path_buf(),
            line,
            column,
            byte: bytes.get(at).copied().unwrap_or_default(),
        }
    })
}

/// Checks that every `\r` in `text` ends a line (`\r\n`).
///
/// # Errors
///
/// [`TextError::BareCarriageReturn`] at the first other `\r`.
pub fn check_line_ends(text: &str, file: &Path) -> Result<(), TextError> {
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices('\r') {
        if bytes.get(at + 1) != Some(&b'\n') {
            let (line, column) = line_col(text, at);
            return Err(TextError::BareCarriageReturn {
                file: file.to_path_buf(),
                line,
                column,
            });
        }
    }
    Ok(())
}

/// The lines of a line-based file as `(1-based number, line)`, without the
/// line end, after the checks of the module doc.
///
/// # Errors
///
/// [`TextError::BareCarriageReturn`], [`TextError::LongLine`] or
/// [`TextError::ControlCharacter`] for the first offending line.
pub fn lines<'a>(text: &'a str, file: &Path) -> Result<Vec<(usize, &'a str)>, TextError> {
    check_line_ends(text, file)?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.len() > MAX_LINE_BYTES {
            return Err(TextError::LongLine {
                file: file.to_path_buf(),
                line,
                len: raw.len(),
                max: MAX_LINE_BYTES,
            });
        }
        if let Some((column, ch)) = raw
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && *c != '\t')
        {
            return Err(TextError::ControlCharacter {
                file: file.to_path_buf(),
                line,
                column: column + 1,
                code: u32::from(ch),
            });
        }
        out.push((line, raw));
    }
    Ok(out)
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
#[must_use]
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> &'static Path {
        Path::new("f")
    }

    #[test]
    fn crlf_is_accepted_and_stripped() {
        let l = lines("a\r\nb\r\n", f()).unwrap();
        assert_eq!(l, vec![(1, "a"), (2, "b")]);
    }

    #[test]
    fn bare_cr_is_refused_at_its_position() {
        let e = lines("a\nbc\rd\n", f()).unwrap_err().to_string();
        assert_eq!(
            e,
            "f:2:3: carriage return (\\r) that does not end a line (line ends are \\n or \\r\\n)"
        );
    }

    #[test]
    fn control_characters_and_long_lines_are_refused() {
        let e = lines("ok\tok\nx\u{0}y\n", f()).unwrap_err().to_string();
        assert_eq!(e, "f:2:2: control character U+0000 (only tab is allowed)");
        let long = format!("ok\n{}\n", "a".repeat(MAX_LINE_BYTES + 1));
        let e = lines(&long, f()).unwrap_err().to_string();
        assert_eq!(e, "f:2: line is 1025 bytes long, at most 1024 are allowed");
        assert!(lines(&"a".repeat(MAX_LINE_BYTES), f()).is_ok());
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = std::env::temp_dir().join(format!("config-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big");
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES + 1]).unwrap();
        let e = read(&path).unwrap_err().to_string();
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES]).unwrap();
        let at_limit = read(&path).map(|t| t.len());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            e,
            format!(
                "{}:1: larger than 1048576 bytes: not a configuration file",
                path.display()
            )
        );
        assert_eq!(at_limit.unwrap(), MAX_FILE_BYTES);
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let e = decode(b"ab\ncd\xffe".to_vec(), f())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f:2:3: not UTF-8 text (byte 0xff)");
    }
}
