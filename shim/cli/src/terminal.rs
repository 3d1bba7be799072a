//! Printing what a function wrote (its stdout and stderr, exception
//! messages and tracebacks) without letting it drive the user's terminal:
//! control characters are escaped when the stream is a terminal (escape
//! sequences could retitle the window, rewrite earlier lines, or make the
//! terminal answer with input). `ember --raw` prints them as they are;
//! pipes and files always get the bytes unchanged.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static RAW: AtomicBool = AtomicBool::new(false);

/// Print function output as it is, even to a terminal (`--raw`).
pub fn set_raw(raw: bool) {
    RAW.store(raw, Ordering::Relaxed);
}

/// Which stream the text goes to.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// `text` as it may be printed on `stream`.
pub fn shown(text: &str, stream: Stream) -> Cow<'_, str> {
    if RAW.load(Ordering::Relaxed) || !stream.is_terminal() {
        Cow::Borrowed(text)
    } else {
        escape_controls(text)
    }
}

/// Control characters (C0 but newline and tab, DEL, C1) written as
/// `\x1b`-style escapes; everything else unchanged.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if control(c) {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_spelled_out_but_lines_and_tabs_kept() {
        assert_eq!(escape_controls("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07 \x1b[2J\r\u{9b}31m\u{7f}"),
            "\\x1b]0;pwned\\x07 \\x1b[2J\\x0d\\x9b31m\\x7f"
        );
        assert!(matches!(escape_controls("é ok"), Cow::Borrowed(_)));
    }
}
