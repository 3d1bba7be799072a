//! PEP 508 requirement specifiers without URLs: a distribution name,
//! optional `[extras]`, optional version clauses (`==1.0`, `>=1,<2`,
//! `~=1.4`, `(>=1)`) and optional `; environment markers`. Nothing that
//! pip would read as a place to install from (a URL, `name @ URL`, a
//! local path, an archive file name) gets through.

use super::snippet;

/// Why a requirement specifier is refused. `String` fields are already
/// escaped and cut (`snippet`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SpecError {
    #[error("URLs are not allowed: name the package and its version")]
    Url,
    #[error("version-control URLs are not allowed: name the package and its version")]
    VcsUrl,
    #[error("direct references (name @ URL) are not allowed: name the package and its version")]
    DirectReference,
    #[error("local paths are not allowed: name the package and its version")]
    LocalPath,
    #[error("non-ASCII characters are not allowed in a requirement")]
    NonAscii,
    #[error(
        "{name} ends like an archive ({ext}): pip would install a local file; \
         name the package instead"
    )]
    Archive { name: String, ext: &'static str },
    #[error("does not start with a package name (letters, digits, '.', '_', '-')")]
    NoName,
    #[error("a '(' around the version clauses is not closed")]
    UnclosedVersions,
    #[error(
        "unexpected `{rest}` after the requirement (allowed: name, [extras], version clauses like ==1.0 or >=1,<2, ; markers)"
    )]
    Trailing { rest: String },
    #[error("an extra in [...] is not a plain name")]
    BadExtra,
    #[error("extras must be names separated by ',' inside [...]")]
    ExtrasSeparator,
    #[error("expected a version clause (==, !=, <=, >=, <, >, ~=, === and a version)")]
    NoVersionOperator,
    #[error("a version clause has no version")]
    NoVersion,
    /// A marker token left over after a whole expression (`token` is its
    /// debug form).
    #[error("unexpected {token} in the environment markers")]
    MarkerLeftOver { token: String },
    #[error("unexpected `{rest}` in the environment markers")]
    MarkerUnexpected { rest: String },
    #[error("'not' in the environment markers must be 'not in'")]
    MarkerNotWithoutIn,
    #[error("`{word}` is not an environment marker variable")]
    MarkerVariable { word: String },
    #[error("environment markers nest more than 16 parentheses deep")]
    MarkersTooDeep,
    #[error("a '(' in the environment markers is not closed")]
    MarkerUnclosed,
    #[error("an environment marker must compare two values")]
    MarkerNotComparison,
    #[error("expected a marker variable or a quoted string")]
    MarkerValue,
}

/// Why `spec`, the requirement part of a requirements line, is refused.
pub(super) fn check_specifier(spec: &str) -> Result<(), SpecError> {
    if let Some(why) = location(spec) {
        return Err(why);
    }
    if !spec.is_ascii() {
        return Err(SpecError::NonAscii);
    }
    // pip splits the markers off at the first ';' (for a non-URL).
    let (req, markers) = match spec.split_once(';') {
        Some((r, m)) => (r, Some(m)),
        None => (spec, None),
    };
    let name = requirement(req.trim())?;
    if let Some(ext) = ARCHIVE_EXTENSIONS
        .iter()
        .find(|e| name.to_ascii_lowercase().ends_with(*e))
    {
        return Err(SpecError::Archive {
            name: snippet(name),
            ext,
        });
    }
    match markers.map(str::trim) {
        Some(m) if !m.is_empty() => check_markers(m),
        _ => Ok(()),
    }
}

/// pip reads a name ending like this as a local archive to install.
const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".whl",
    ".tar.gz",
    ".tgz",
    ".tar",
    ".zip",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
];

/// A clearer reason for the usual ways of naming a place, not a package.
fn location(spec: &str) -> Option<SpecError> {
    let req = spec.split(';').next().unwrap_or(spec).trim();
    let lower = req.to_ascii_lowercase();
    if spec.contains("://") || lower.starts_with("file:") {
        return Some(SpecError::Url);
    }
    if ["git+", "hg+", "svn+", "bzr+"]
        .iter()
        .any(|v| lower.starts_with(v))
    {
        return Some(SpecError::VcsUrl);
    }
    if req.contains('@') {
        return Some(SpecError::DirectReference);
    }
    if req.starts_with('.') || req.contains(['/', '\\']) {
        return Some(SpecError::LocalPath);
    }
    None
}

/// Parse `name [extras] versionspec`; returns the name.
fn requirement(req: &str) -> Result<&str, SpecError> {
    let mut c = Cursor::new(req);
    let name = c.name().ok_or(SpecError::NoName)?;
    c.ws();
    if c.eat("[") {
        extras(&mut c)?;
    }
    c.ws();
    if c.eat("(") {
        versions(&mut c)?;
        c.ws();
        if !c.eat(")") {
            return Err(SpecError::UnclosedVersions);
        }
    } else if !c.at_end() {
        versions(&mut c)?;
    }
    c.ws();
    if !c.at_end() {
        return Err(SpecError::Trailing {
            rest: snippet(c.rest()),
        });
    }
    Ok(name)
}

fn extras(c: &mut Cursor<'_>) -> Result<(), SpecError> {
    c.ws();
    if c.eat("]") {
        return Ok(());
    }
    loop {
        c.ws();
        c.name().ok_or(SpecError::BadExtra)?;
        c.ws();
        if c.eat("]") {
            return Ok(());
        }
        if !c.eat(",") {
            return Err(SpecError::ExtrasSeparator);
        }
    }
}

const VERSION_OPS: &[&str] = &["===", "==", "~=", "!=", "<=", ">=", "<", ">"];

fn versions(c: &mut Cursor<'_>) -> Result<(), SpecError> {
    loop {
        c.ws();
        if !VERSION_OPS.iter().any(|op| c.eat(op)) {
            return Err(SpecError::NoVersionOperator);
        }
        c.ws();
        let v = c.take_while(|b| b.is_ascii_alphanumeric() || b"-_.*+!".contains(&b));
        if v.is_empty() {
            return Err(SpecError::NoVersion);
        }
        c.ws();
        if !c.eat(",") {
            return Ok(());
        }
    }
}

/// Environment markers: comparisons of marker variables and quoted
/// strings, joined with `and` / `or`, in parentheses at most 16 deep.
fn check_markers(m: &str) -> Result<(), SpecError> {
    let tokens = tokenize(m)?;
    let mut p = Markers { tokens, pos: 0 };
    p.or(0)?;
    if p.pos != p.tokens.len() {
        return Err(SpecError::MarkerLeftOver {
            token: format!("{:?}", p.tokens[p.pos]),
        });
    }
    Ok(())
}

const MARKER_VARIABLES: &[&str] = &[
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Str,
    Var,
    Op,
    And,
    Or,
}

fn tokenize(m: &str) -> Result<Vec<Token>, SpecError> {
    let mut c = Cursor::new(m);
    let mut out = Vec::new();
    loop {
        c.ws();
        let Some(b) = c.peek() else {
            return Ok(out);
        };
        let token = match b {
            b'(' => c.eat("(").then_some(Token::Open),
            b')' => c.eat(")").then_some(Token::Close),
            b'\'' | b'"' => c.quoted(b).then_some(Token::Str),
            b'a'..=b'z' | b'_' => word(&mut c)?,
            _ => VERSION_OPS.iter().any(|op| c.eat(op)).then_some(Token::Op),
        };
        out.push(token.ok_or_else(|| SpecError::MarkerUnexpected {
            rest: snippet(c.rest()),
        })?);
    }
}

fn word(c: &mut Cursor<'_>) -> Result<Option<Token>, SpecError> {
    let w = c.take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    Ok(Some(match w {
        "and" => Token::And,
        "or" => Token::Or,
        "in" => Token::Op,
        "not" => {
            c.ws();
            if c.take_while(|b| b.is_ascii_lowercase()) != "in" {
                return Err(SpecError::MarkerNotWithoutIn);
            }
            Token::Op
        }
        v if MARKER_VARIABLES.contains(&v) => Token::Var,
        v => return Err(SpecError::MarkerVariable { word: snippet(v) }),
    }))
}

struct Markers {
    tokens: Vec<Token>,
    pos: usize,
}

impl Markers {
    fn next_is(&self, t: &Token) -> bool {
        self.tokens.get(self.pos) == Some(t)
    }

    fn or(&mut self, depth: usize) -> Result<(), SpecError> {
        self.and(depth)?;
        while self.next_is(&Token::Or) {
            self.pos += 1;
            self.and(depth)?;
        }
        Ok(())
    }

    fn and(&mut self, depth: usize) -> Result<(), SpecError> {
        self.expr(depth)?;
        while self.next_is(&Token::And) {
            self.pos += 1;
            self.expr(depth)?;
        }
        Ok(())
    }

    fn expr(&mut self, depth: usize) -> Result<(), SpecError> {
        if self.next_is(&Token::Open) {
            if depth >= 16 {
                return Err(SpecError::MarkersTooDeep);
            }
            self.pos += 1;
            self.or(depth + 1)?;
            if !self.next_is(&Token::Close) {
                return Err(SpecError::MarkerUnclosed);
            }
            self.pos += 1;
            return Ok(());
        }
        self.value()?;
        if !self.next_is(&Token::Op) {
            return Err(SpecError::MarkerNotComparison);
        }
        self.pos += 1;
        self.value()
    }

    fn value(&mut self) -> Result<(), SpecError> {
        match self.tokens.get(self.pos) {
            Some(Token::Str | Token::Var) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(SpecError::MarkerValue),
        }
    }
}

/// A position in an ASCII string.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, i: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i == self.s.len()
    }

    fn eat(&mut self, lit: &str) -> bool {
        let hit = self.rest().starts_with(lit);
        if hit {
            self.i += lit.len();
        }
        hit
    }

    fn ws(&mut self) {
        self.take_while(|b| b == b' ' || b == b'\t');
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A distribution or extra name: `[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?`.
    fn name(&mut self) -> Option<&'a str> {
        let start = self.i;
        let n = self.take_while(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let ok = n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            self.i = start;
        }
        ok.then_some(n)
    }

    /// A string in `quote`s: printable ASCII, no backslash.
    fn quoted(&mut self, quote: u8) -> bool {
        self.i += 1;
        self.take_while(|b| b != quote && b != b'\\' && (b' '..=b'~').contains(&b));
        if self.peek() != Some(quote) {
            return false;
        }
        self.i += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_extras_versions_and_markers() {
        for ok in [
            "requests",
            "requests==2.31.0",
            "Django>=4.2,<5",
            "numpy ~= 1.26",
            "pkg != 1.0.*",
            "legacy===1.0-weird",
            "zope.interface>=5",
            "a_b-c.d",
            "requests[socks]",
            "requests[socks, security] >= 2",
            "requests [ socks ]==2",
            "pkg (>=1.0, <2)",
            "pkg==1.0+local.1",
            "pkg==1!2.0",
            "typing-extensions; python_version < \"3.8\"",
            "pkg ; sys_platform == 'linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64')",
            "pkg; extra == 'test' or os_name not in 'nt java'",
            "pkg>=1;python_version>='3'",
            "pkg;",
        ] {
            check_specifier(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_urls_paths_archives_and_garbage() {
        let cases = [
            ("pkg @ https://example.com/pkg.whl", "URLs"),
            ("pkg@file:///tmp/x", "URLs"),
            ("https://example.com/x.tar.gz", "URLs"),
            ("file:/etc/x", "URLs"),
            ("git+https://github.com/a/b", "URLs"),
            ("git+ssh://git@github.com/a/b", "URLs"),
            ("pkg @ git+https://x/y", "URLs"),
            ("pkg @ ./local", "direct references"),
            ("./x", "local paths"),
            ("/x", "local paths"),
            ("sub/pkg", "local paths"),
            (".hidden", "local paths"),
            ("x.whl", "archive"),
            ("x.tar.gz", "archive"),
            ("X.ZIP", "archive"),
            ("x.tgz[extra]", "archive"),
            ("pkg==", "no version"),
            ("pkg>>1", "version clause"),
            ("pkg 1.0", "version clause"),
            ("-pkg", "package name"),
            ("pkg[", "extra"),
            ("pkg (>=1", "not closed"),
            ("pkg; os_name = 'x'", "unexpected"),
            ("pkg; evil == 'x'", "not an environment marker variable"),
            ("pkg; os_name == 'x", "unexpected"),
            ("pkg; os_name == 'a\\'b'", "unexpected"),
            ("pkg; (os_name == 'x'", "not closed"),
            ("pkg; os_name", "compare"),
            ("pkg; os_name not 'x'", "not in"),
            ("pkg==1.0 --index-url=x", "version clause"),
            ("pkg==1.0\t-i x", "unexpected"),
            ("pkg==1.0 é", "non-ASCII"),
        ];
        for (bad, why) in cases {
            let e = check_specifier(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let deep = format!("pkg; {}os_name == 'x'{}", "(".repeat(17), ")".repeat(17));
        assert!(check_specifier(&deep)
            .unwrap_err()
            .to_string()
            .contains("16"));
    }
}
