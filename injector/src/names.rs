//! Names of entries in a code tree: the rules every stored path obeys,
//! and how a name that came from hostile input is shown in a message.
//!
//! A stored path is relative, valid UTF-8, made of plain components of at
//! most [`MAX_COMPONENT_BYTES`], and at most [`MAX_PATH_BYTES`] long in
//! all. Checking this when an entry is read turns a name the file system
//! would refuse later (`ENAMETOOLONG`, a server error) into a clear
//! refusal of the upload.
//!
//! A name goes into a message only through [`shown`]: control and
//! invisible formatting characters escaped, at most 128 characters.
//!
//! ```
//! use ember_injector::names::shown;
//! assert_eq!(shown(b"evil\x1b[2Jname"), "evil\\x1b[2Jname");
//! assert!(shown(&[b'a'; 300]).ends_with("a… (300 bytes)"));
//! ```

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest path inside a tree, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest name shown in a message, in characters.
pub const SHOWN_CHARS: usize = 128;

/// `bytes` fit for a message: see [`escape_truncated`], at most
/// [`SHOWN_CHARS`] characters.
pub fn shown(bytes: &[u8]) -> String {
    escape_truncated(bytes, SHOWN_CHARS)
}

/// A path fit for a message, like [`shown`].
pub fn shown_path(path: &Path) -> String {
    shown(path.as_os_str().as_bytes())
}

/// `bytes` as text: bytes that are not UTF-8 as `\xNN`, control
/// characters as `\xNN` or `\u{NNNN}`, characters that reorder or hide
/// text (bidirectional controls, zero-width characters) as `\u{NNNN}`, a
/// backslash doubled. At most `max_chars` characters; a longer text is cut
/// between escapes and followed by `… (N bytes)`, N its full length.
pub fn escape_truncated(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().chars().map(escape_char);
        let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02x}"));
        for piece in valid.chain(invalid) {
            let n = piece.chars().count();
            if chars + n > max_chars {
                out.push_str(&format!("… ({} bytes)", bytes.len()));
                return out;
            }
            chars += n;
            out.push_str(&piece);
        }
    }
    out
}

fn escape_char(c: char) -> String {
    match c {
        '\\' => "\\\\".to_string(),
        c if c.is_ascii_control() => format!("\\x{:02x}", c as u32),
        c if c.is_control() || hides_text(c) => format!("\\u{{{:x}}}", c as u32),
        c => c.to_string(),
    }
}

/// Characters that change how the text around them is displayed.
fn hides_text(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A checked path inside a code tree (see the module docs); empty for the
/// tree's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RelPath {
    parts: Vec<String>,
    /// Length of the parts joined with `/`.
    len: usize,
}

/// A name that breaks the rules of the module docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code entry {entry}: {reason}")]
pub struct NameError {
    /// The name, escaped and truncated ([`shown`]).
    pub entry: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

fn bad(name: &[u8], reason: &'static str) -> NameError {
    NameError {
        entry: shown(name),
        reason,
    }
}

impl RelPath {
    pub(crate) fn root() -> RelPath {
        RelPath::default()
    }

    /// The name of an archive entry: `/`-separated, with `.` and empty
    /// components dropped (`./a//b/` is `a/b`).
    pub(crate) fn from_archive(raw: &[u8]) -> Result<RelPath, NameError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(bad(raw, "is longer than 4096 bytes"));
        }
        if raw.contains(&0) {
            return Err(bad(raw, "contains a NUL byte"));
        }
        let text = std::str::from_utf8(raw).map_err(|_| bad(raw, "is not valid UTF-8"))?;
        if text.starts_with('/') {
            return Err(bad(
                raw,
                "is absolute: absolute paths and '..' are not allowed",
            ));
        }
        let mut out = RelPath::default();
        for part in text.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(bad(
                    raw,
                    "contains '..': absolute paths and '..' are not allowed",
                ));
            }
            out = out.child(raw, part)?;
        }
        Ok(out)
    }

    /// The entry `name` (one component, as read from a directory) inside
    /// this directory.
    pub(crate) fn join(&self, name: &OsStr) -> Result<RelPath, NameError> {
        let whole = || {
            let mut p = self.to_string().into_bytes();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name.as_bytes());
            p
        };
        let part = std::str::from_utf8(name.as_bytes())
            .map_err(|_| bad(&whole(), "is not valid UTF-8"))?;
        if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\0']) {
            return Err(bad(&whole(), "is not a plain file name"));
        }
        self.child(&whole(), part)
    }

    fn child(&self, whole: &[u8], part: &str) -> Result<RelPath, NameError> {
        if part.len() > MAX_COMPONENT_BYTES {
            return Err(bad(whole, "has a path component longer than 255 bytes"));
        }
        let len = if self.parts.is_empty() {
            part.len()
        } else {
            self.len + 1 + part.len()
        };
        if len > MAX_PATH_BYTES {
            return Err(bad(whole, "is longer than 4096 bytes"));
        }
        let mut parts = self.parts.clone();
        parts.push(part.to_string());
        Ok(RelPath { parts, len })
    }

    pub(crate) fn parts(&self) -> &[String] {
        &self.parts
    }

    pub(crate) fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The last component (empty for the root).
    pub(crate) fn name(&self) -> &str {
        self.parts.last().map_or("", |s| s.as_str())
    }

    /// The components of the parent directory (none for the root).
    pub(crate) fn parent_parts(&self) -> &[String] {
        &self.parts[..self.parts.len().saturating_sub(1)]
    }

    /// This path fit for a message.
    pub(crate) fn shown(&self) -> String {
        shown(self.to_string().as_bytes())
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<RelPath, NameError>) -> &'static str {
        match r {
            Err(NameError { reason, .. }) => reason,
            other => panic!("expected a NameError, got {other:?}"),
        }
    }

    #[test]
    fn shown_escapes_controls_bad_bytes_and_hidden_text() {
        assert_eq!(shown(b"main.py"), "main.py");
        assert_eq!(shown(b"a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
        assert_eq!(shown(b"bad\xff\xfe"), "bad\\xff\\xfe");
        assert_eq!(shown("x\u{202e}y\u{85}".as_bytes()), "x\\u{202e}y\\u{85}");
        assert_eq!(shown(b"back\\slash"), "back\\\\slash");
        assert_eq!(shown("héllo".as_bytes()), "héllo");
    }

    #[test]
    fn shown_truncates_at_128_characters_between_escapes() {
        let long = vec![b'a'; 300];
        let s = shown(&long);
        assert_eq!(s, format!("{}… (300 bytes)", "a".repeat(128)));
        // An escape is never cut in half.
        let mut esc = vec![b'a'; 126];
        esc.push(0x1b);
        let s = shown(&esc);
        assert_eq!(s, format!("{}… (127 bytes)", "a".repeat(126)));
        assert_eq!(shown(&[b'b'; 128]), "b".repeat(128));
        assert_eq!(escape_truncated("ééé".as_bytes(), 2), "éé… (6 bytes)");
    }

    #[test]
    fn archive_names_are_relative_plain_utf8_and_bounded() {
        let p = RelPath::from_archive(b"./a//b/").unwrap();
        assert_eq!(p.parts(), ["a", "b"]);
        assert!(RelPath::from_archive(b"./").unwrap().is_root());
        assert!(reason(RelPath::from_archive(b"/etc/passwd")).contains("absolute"));
        assert!(reason(RelPath::from_archive(b"a/../../x")).contains("'..'"));
        assert!(reason(RelPath::from_archive(b"a\xffb")).contains("UTF-8"));
        assert!(reason(RelPath::from_archive(b"a\0b")).contains("NUL"));
        let long = format!("d/{}", "n".repeat(256));
        assert!(reason(RelPath::from_archive(long.as_bytes())).contains("255 bytes"));
        let ok = format!("d/{}", "n".repeat(255));
        assert!(RelPath::from_archive(ok.as_bytes()).is_ok());
        let deep = vec!["x".repeat(200); 21].join("/");
        assert!(reason(RelPath::from_archive(deep.as_bytes())).contains("4096"));
        let max = vec!["y".repeat(255); 16].join("/");
        assert_eq!(max.len(), 4095);
        assert!(RelPath::from_archive(max.as_bytes()).is_ok());
    }

    #[test]
    fn joined_names_obey_the_same_rules() {
        let d = RelPath::from_archive(b"d").unwrap();
        assert_eq!(d.join(OsStr::new("f")).unwrap().to_string(), "d/f");
        let bad = OsStr::from_bytes(b"\xff");
        assert!(reason(d.join(bad)).contains("UTF-8"));
        assert!(reason(d.join(OsStr::new(".."))).contains("plain"));
        let mut p = RelPath::root();
        for _ in 0..16 {
            p = p.join(OsStr::new(&"z".repeat(255))).unwrap();
        }
        assert!(reason(p.join(OsStr::new("q"))).contains("4096"));
    }
}
