//! Reading a requirements file the way pip does, then judging each line.
//!
//! What is checked must be what pip will act on, so the text is cut into
//! lines exactly as pip 23 cuts it (`pip/_internal/req/req_file.py`:
//! `splitlines`, `join_lines` for trailing backslashes, `COMMENT_RE`
//! `(^|\s+)#.*$`, `strip`, then `break_args_options`: the requirement is
//! the space-separated tokens before the first one starting with `-`).
//! Where an exact copy would take more than it is worth, the check
//! refuses instead: any control character or line separator but tab and
//! the line ends (so splitting agrees), any encoding declaration but
//! UTF-8 (pip would honour it), quotes and backslashes in options (pip
//! would unquote them with `shlex`).
//!
//! A line may be blank, a comment, a requirement (see `pep508.rs`)
//! optionally followed by `--hash=ALGO:HEX` options, or an include:
//! `-r FILE`, `--requirement FILE`, `--requirement=FILE`. Nothing else:
//! no other option, no `${VAR}` (pip expands it from emberd's
//! environment).

use super::pep508::{check_specifier, SpecError};
use super::snippet;

/// A logical line: backslash continuations joined, comments removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// 1-based number of its first physical line.
    pub(super) number: usize,
    /// As written, continuations joined (for messages).
    pub(super) raw: String,
    /// What pip acts on: comment removed, trimmed; never empty.
    pub(super) text: String,
}

/// What a line asks of pip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parsed {
    Requirement,
    /// `-r FILE`: the file named, relative to the including file's
    /// directory, as plain components.
    Include(Vec<String>),
}

/// Why a requirements file's bytes are not read as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum EncodingError {
    #[error("is not valid UTF-8 (at byte {at}): only UTF-8 is accepted")]
    NotUtf8 { at: usize },
    /// `encoding` is escaped and cut (`snippet`).
    #[error("declares the encoding `{encoding}`, which pip would use: only UTF-8 is accepted")]
    Declared { encoding: String },
}

/// A physical line with a character pip would split or read differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("contains the character {character:?}: only tabs and printable characters are allowed")]
pub(super) struct BadCharacter {
    /// 1-based number of the physical line.
    pub(super) number: usize,
    /// The line as written.
    pub(super) line: String,
    pub(super) character: char,
}

/// Why a logical line is refused. `String` fields are already escaped
/// and cut (`snippet`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum LineError {
    #[error("environment variable references (${{...}}) are not allowed")]
    EnvironmentVariable,
    #[error("quotes and backslashes are not allowed in options")]
    QuotedOption,
    #[error("-r takes exactly one file name")]
    IncludeArguments,
    #[error(
        "option {option} is not allowed: a line may only be a requirement \
         (optionally with --hash=ALGO:HEX) or -r FILE; index and proxy \
         settings belong to emberd's environment"
    )]
    Option { option: String },
    #[error("an empty option")]
    EmptyOption,
    #[error("-r to a URL is not allowed: only files inside the function's code")]
    IncludeUrl,
    #[error("-r to an absolute path is not allowed: only files inside the function's code")]
    IncludeAbsolute,
    #[error(
        "-r must name a file inside the function's code by a relative path of plain names \
         (letters, digits, '.', '_', '+', '-'; no '..', '.' or empty parts)"
    )]
    IncludeNotPlain,
    #[error(
        "{option} is not allowed after a requirement: only --hash=sha256:HEX (or sha384, sha512)"
    )]
    AfterRequirement { option: String },
    #[error(transparent)]
    Specifier(#[from] SpecError),
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The file's text, if pip would read it as we do: UTF-8 (a UTF-8 byte
/// order mark dropped), no other encoding declared.
pub(super) fn decode(data: &[u8]) -> Result<&str, EncodingError> {
    let data = match data.strip_prefix(UTF8_BOM) {
        Some(rest) => rest,
        // pip honours a PEP 263 declaration only without a BOM.
        None => {
            check_declared_encoding(data)?;
            data
        }
    };
    std::str::from_utf8(data).map_err(|e| EncodingError::NotUtf8 {
        at: e.valid_up_to(),
    })
}

/// pip decodes with the encoding named by `coding[:=]NAME` in one of the
/// first two lines, when the line starts with `#`.
fn check_declared_encoding(data: &[u8]) -> Result<(), EncodingError> {
    for line in data.split(|&b| b == b'\n').take(2) {
        if !line.starts_with(b"#") {
            continue;
        }
        if let Some(enc) = declared_encoding(line) {
            let norm = enc.to_ascii_lowercase().replace('_', "-");
            if norm != "utf-8" && norm != "utf8" {
                return Err(EncodingError::Declared {
                    encoding: snippet(&enc),
                });
            }
        }
    }
    Ok(())
}

/// The first match of pip's `coding[:=]\s*([-\w.]+)` in `line`.
fn declared_encoding(line: &[u8]) -> Option<String> {
    let is_name = |b: &u8| b.is_ascii_alphanumeric() || b"-_.".contains(b);
    let mut from = 0;
    while let Some(at) = find(&line[from..], b"coding").map(|i| i + from) {
        from = at + 1;
        let rest = &line[at + b"coding".len()..];
        let Some((b':' | b'=', rest)) = rest.split_first().map(|(b, r)| (*b, r)) else {
            continue;
        };
        let rest = &rest[rest
            .iter()
            .take_while(|b| b" \t\r\x0b\x0c".contains(b))
            .count()..];
        let name: Vec<u8> = rest.iter().copied().take_while(|b| is_name(b)).collect();
        if !name.is_empty() {
            return Some(String::from_utf8_lossy(&name).into_owned());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The logical lines of `text`, or the first physical line with a
/// character pip would split or read differently.
pub(super) fn logical_lines(text: &str) -> Result<Vec<Line>, BadCharacter> {
    let physical = split_lines(text);
    for (i, line) in physical.iter().enumerate() {
        if let Some(character) = line.chars().find(|&c| splits_differently(c)) {
            return Err(BadCharacter {
                number: i + 1,
                line: line.to_string(),
                character,
            });
        }
    }
    Ok(join_lines(&physical)
        .into_iter()
        .filter_map(|(number, raw)| {
            let text = strip_comment(&raw).trim().to_string();
            (!text.is_empty()).then_some(Line { number, raw, text })
        })
        .collect())
}

/// Control characters and line separators (Python's `splitlines` breaks
/// at several of them), tab aside.
fn splits_differently(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
}

/// Python's `str.splitlines` for text whose only line breaks are `\n`,
/// `\r\n` and `\r` (the others are refused).
fn split_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        out.push(&rest[..end]);
        let brk = if rest[end..].starts_with("\r\n") {
            2
        } else {
            usize::from(end < rest.len())
        };
        rest = &rest[end + brk..];
    }
    out
}

/// pip's `COMMENT_RE.match`: a comment line, maybe indented. Rust's
/// whitespace and Python's `\s` agree on every character allowed here.
fn is_comment_line(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// pip's `join_lines`: a line ending in `\` (not a comment line) is
/// continued by the next; the joined line keeps the first's number.
fn join_lines(lines: &[&str]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, &line) in lines.iter().enumerate() {
        let number = i + 1;
        if !line.ends_with('\\') || is_comment_line(line) {
            let line = match is_comment_line(line) {
                true => format!(" {line}"),
                false => line.to_string(),
            };
            match pending.take() {
                Some((n, mut joined)) => {
                    joined.push_str(&line);
                    out.push((n, joined));
                }
                None => out.push((number, line)),
            }
        } else {
            let (_, joined) = pending.get_or_insert_with(|| (number, String::new()));
            joined.push_str(line.trim_matches('\\'));
        }
    }
    out.extend(pending);
    out
}

/// pip's `COMMENT_RE.sub("", line)`: from the first `#` that starts the
/// line or follows whitespace, together with that whitespace.
fn strip_comment(line: &str) -> &str {
    let mut prev_ws = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_ws {
            return line[..i].trim_end();
        }
        prev_ws = c.is_whitespace();
    }
    line
}

/// Judge one logical line's text.
pub(super) fn parse(text: &str) -> Result<Parsed, LineError> {
    if text.contains("${") {
        return Err(LineError::EnvironmentVariable);
    }
    // pip's break_args_options.
    let tokens: Vec<&str> = text.split(' ').collect();
    let first_option = tokens
        .iter()
        .position(|t| t.starts_with('-'))
        .unwrap_or(tokens.len());
    let args = tokens[..first_option].join(" ");
    let options = tokens[first_option..].join(" ");
    if options.contains(['"', '\'', '\\']) {
        return Err(LineError::QuotedOption);
    }
    let options: Vec<&str> = options.split_ascii_whitespace().collect();
    if args.trim().is_empty() {
        return include(&options).map(Parsed::Include);
    }
    check_specifier(args.trim())?;
    for opt in options {
        check_hash(opt)?;
    }
    Ok(Parsed::Requirement)
}

fn include(options: &[&str]) -> Result<Vec<String>, LineError> {
    let file = match options {
        ["-r" | "--requirement", file] => *file,
        [opt] if opt.starts_with("--requirement=") => &opt["--requirement=".len()..],
        ["-r" | "--requirement", ..] => {
            return Err(LineError::IncludeArguments);
        }
        [opt, ..] => {
            let option = snippet(opt.split('=').next().unwrap_or(opt));
            return Err(LineError::Option { option });
        }
        [] => return Err(LineError::EmptyOption),
    };
    include_path(file)
}

/// The file of an include: a relative path of plain names.
fn include_path(file: &str) -> Result<Vec<String>, LineError> {
    if file.contains(':') {
        return Err(LineError::IncludeUrl);
    }
    if file.starts_with('/') {
        return Err(LineError::IncludeAbsolute);
    }
    let plain = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.len() <= 255
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    let parts: Vec<&str> = file.split('/').collect();
    if !parts.iter().all(plain) {
        return Err(LineError::IncludeNotPlain);
    }
    Ok(parts.into_iter().map(String::from).collect())
}

fn check_hash(opt: &str) -> Result<(), LineError> {
    let ok = opt
        .strip_prefix("--hash=")
        .and_then(|v| v.split_once(':'))
        .is_some_and(|(algo, hex)| {
            ["sha256", "sha384", "sha512"].contains(&algo)
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
    match ok {
        true => Ok(()),
        false => Err(LineError::AfterRequirement {
            option: snippet(opt.split('=').next().unwrap_or(opt)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<(usize, String)> {
        logical_lines(s)
            .unwrap()
            .into_iter()
            .map(|l| (l.number, l.text))
            .collect()
    }

    #[test]
    fn lines_are_cut_joined_and_uncommented_like_pip() {
        let t = "# top comment\n\nrequests==2 # why\r\nflask\\\n>=2  \\\n,<3\rpkg#not-a-comment\n  # indented \\\nnext\n";
        assert_eq!(
            texts(t),
            [
                (3, "requests==2".to_string()),
                (4, "flask>=2  ,<3".to_string()),
                (7, "pkg#not-a-comment".to_string()),
                (9, "next".to_string()),
            ]
        );
        // A continued line that ends the file is kept.
        assert_eq!(texts("a\\"), [(1, "a".to_string())]);
    }

    #[test]
    fn characters_pip_would_split_at_are_refused() {
        for bad in [
            "a\x0bb",
            "a\x0cb",
            "a\x1cb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\0b",
        ] {
            let e = logical_lines(&format!("ok\n{bad}\n")).unwrap_err();
            assert_eq!(e.number, 2, "{bad:?}");
            assert!(e.to_string().contains("character"), "{e}");
        }
        // Tabs are fine.
        assert_eq!(texts("a\t>=1\n"), [(1, "a\t>=1".to_string())]);
    }

    #[test]
    fn only_utf8_is_read() {
        assert_eq!(decode(b"\xef\xbb\xbfpkg\n").unwrap(), "pkg\n");
        assert!(decode(b"pkg\xff\n")
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert!(decode(b"\xff\xfep\0k\0").is_err());
        let e = decode(b"# -*- coding: utf-7 -*-\npkg\n").unwrap_err();
        assert!(e.to_string().contains("utf-7"), "{e}");
        assert!(decode(b"pkg\n#coding=latin-1\n").is_err());
        decode(b"# -*- coding: utf-8 -*-\npkg\n").unwrap();
        decode(b"# vim: set fileencoding=UTF_8 :\npkg\n").unwrap();
        // Only the first two lines, only lines starting with '#'.
        decode(b"a\nb\n# coding: utf-7\n").unwrap();
        decode(b"pkg # coding: utf-7\n").unwrap();
        // With a BOM pip ignores the declaration.
        decode(b"\xef\xbb\xbf# coding: latin-1\npkg\n").unwrap();
    }

    #[test]
    fn requirements_with_hashes_are_accepted() {
        let h = "a".repeat(64);
        for ok in [
            "requests==2.31.0".to_string(),
            format!("requests==2.31.0 --hash=sha256:{h}"),
            format!("requests==2.31.0 --hash=sha256:{h} --hash=sha512:{h}"),
            "pkg; python_version >= '3.8'".to_string(),
        ] {
            assert_eq!(parse(&ok), Ok(Parsed::Requirement), "{ok}");
        }
    }

    #[test]
    fn includes_are_relative_plain_paths() {
        let inc = |p: &[&str]| Ok(Parsed::Include(p.iter().map(|s| s.to_string()).collect()));
        assert_eq!(parse("-r base.txt"), inc(&["base.txt"]));
        assert_eq!(
            parse("--requirement sub/other.txt"),
            inc(&["sub", "other.txt"])
        );
        assert_eq!(parse("--requirement=dev-1+x.txt"), inc(&["dev-1+x.txt"]));
        for (bad, why) in [
            ("-r /etc/shadow", "absolute"),
            ("-r ../x", "plain names"),
            ("-r sub/../../x", "plain names"),
            ("-r ./x", "plain names"),
            ("-r a//b", "plain names"),
            ("-r ~/x", "plain names"),
            ("-r http://127.0.0.1:1/x", "URL"),
            ("-r file:/etc/shadow", "URL"),
            ("-r", "exactly one"),
            ("-r a b", "exactly one"),
            ("-r 'a b'", "quotes"),
            ("-rbase.txt", "option -rbase.txt"),
            ("--requ base.txt", "option --requ"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn every_other_option_is_refused() {
        for bad in [
            "-c constraints.txt",
            "--constraint constraints.txt",
            "-e .",
            "--editable git+https://x/y",
            "-i http://evil/simple",
            "--index-url http://evil/simple",
            "--extra-index-url=http://evil/simple",
            "-f http://evil/links",
            "--find-links /tmp",
            "--no-index",
            "--trusted-host evil",
            "--pre",
            "--only-binary :none:",
            "--no-binary :all:",
            "--prefer-binary",
            "--require-hashes",
            "--use-feature truststore",
            "--hash=sha256:00",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.to_string().contains("is not allowed"), "{bad}: {e}");
        }
        for (bad, why) in [
            (
                "requests --index-url=http://evil",
                "--index-url is not allowed after a requirement",
            ),
            ("requests --global-option=x", "--global-option"),
            ("requests --hash=md5:00", "--hash"),
            ("requests --hash=sha256:xyz", "--hash"),
            ("requests==${VERSION}", "environment variable"),
            ("${PKG}", "environment variable"),
            ("requests @ https://evil/x.whl", "URLs"),
            ("./local_pkg", "local paths"),
            ("x.whl", "archive"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
