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

#[cfg(test)]
mod tests {
    use super::*;

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
}
