//! Checking a function's `requirements.txt`, and every file it includes,
//! before pip (run as root on the host) reads them: only package names
//! and versions may reach pip, never a URL, an index, a local path or an
//! option (see `req_lines.rs` for the lines allowed).
//!
//! Files are read only from inside the tree, by descriptor, no component
//! a symlink (`O_NOFOLLOW` at each step), regular files of at most
//! 64 KiB, includes nested at most 8 deep, at most 64 files read in all
//! (as pip would read them, a file included twice counting twice), no
//! cycles. So an error can quote only text from the function's own code.

use super::req_lines::{self, EncodingError, Line, Parsed};
use super::{snippet, DepsError};
use ember_injector::fsat::{self, Kind};
use ember_injector::names::escape_truncated;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Largest requirements file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Deepest chain of includes below `requirements.txt`.
const MAX_DEPTH: usize = 8;
/// Most requirement files read for one tree.
const MAX_FILES: usize = 64;
/// Longest line quoted in an error.
const SHOWN_LINE_CHARS: usize = 200;

/// Check `tree/requirements.txt` and what it includes. `Ok(false)`: the
/// tree has no `requirements.txt`.
pub fn check_requirements(tree: &Path) -> Result<bool, DepsError> {
    let root = fsat::open_dir_path(tree).map_err(|source| DepsError::Io {
        path: tree.to_path_buf(),
        source,
    })?;
    let top = vec!["requirements.txt".to_string()];
    let file = match open_in_tree(root.as_fd(), &top) {
        Ok(f) => f,
        Err(Refused::Missing) => return Ok(false),
        Err(other) => {
            return Err(DepsError::RequirementsFile {
                file: top.join("/"),
                reason: other.to_string(),
            })
        }
    };
    let mut walk = Walk {
        root,
        reading: Vec::new(),
        files_read: 1,
    };
    walk.check_file(top, file)?;
    Ok(true)
}

struct Walk {
    root: OwnedFd,
    /// The chain of files being read, outermost first.
    reading: Vec<Vec<String>>,
    files_read: usize,
}

impl Walk {
    fn check_file(&mut self, rel: Vec<String>, file: File) -> Result<(), DepsError> {
        let name = rel.join("/");
        let file_err = |reason: FileProblem| DepsError::RequirementsFile {
            file: escape_truncated(name.as_bytes(), SHOWN_LINE_CHARS),
            reason: reason.to_string(),
        };
        let data = read_capped(file).map_err(file_err)?;
        let text = req_lines::decode(&data).map_err(|e| file_err(e.into()))?;
        let lines = req_lines::logical_lines(text).map_err(|e| {
            let line = Line {
                number: e.number,
                raw: e.line.clone(),
                text: String::new(),
            };
            refused(&name, &line, &e)
        })?;
        self.reading.push(rel);
        for line in &lines {
            match req_lines::parse(&line.text) {
                Ok(Parsed::Requirement) => {}
                Ok(Parsed::Include(path)) => self.include(line, path)?,
                Err(reason) => return Err(refused(&name, line, &reason)),
            }
        }
        self.reading.pop();
        Ok(())
    }

    /// Follow `-r path` on `line` of the file being read.
    fn include(&mut self, line: &Line, path: Vec<String>) -> Result<(), DepsError> {
        let from = self.reading.last().cloned().unwrap_or_default();
        let err = |reason: IncludeProblem| refused(&from.join("/"), line, &reason);
        // pip resolves an include against the including file's directory.
        let mut rel = from[..from.len().saturating_sub(1)].to_vec();
        rel.extend(path);
        let shown = snippet(&rel.join("/"));
        if self.reading.contains(&rel) {
            return Err(err(IncludeProblem::Cycle { shown }));
        }
        if self.reading.len() > MAX_DEPTH {
            return Err(err(IncludeProblem::TooDeep));
        }
        if self.files_read >= MAX_FILES {
            return Err(err(IncludeProblem::TooManyFiles));
        }
        self.files_read += 1;
        let file = open_in_tree(self.root.as_fd(), &rel)
            .map_err(|source| err(IncludeProblem::Open { shown, source }))?;
        self.check_file(rel, file)
    }
}

fn refused(file: &str, line: &Line, reason: &dyn std::fmt::Display) -> DepsError {
    DepsError::Requirement {
        file: escape_truncated(file.as_bytes(), SHOWN_LINE_CHARS),
        line: line.number,
        text: escape_truncated(line.raw.trim().as_bytes(), SHOWN_LINE_CHARS),
        reason: reason.to_string(),
    }
}

/// Why a requirements file is not read as a whole.
#[derive(Debug, thiserror::Error)]
enum FileProblem {
    #[error("cannot be read: {0}")]
    Read(io::Error),
    #[error("is larger than {} KiB", MAX_FILE_BYTES / 1024)]
    TooLarge,
    #[error(transparent)]
    Encoding(#[from] EncodingError),
}

/// Why a `-r` line's file is not followed. `shown` is the included
/// path, escaped and cut (`snippet`).
#[derive(Debug, thiserror::Error)]
enum IncludeProblem {
    #[error("includes {shown}, which is already being read (a cycle)")]
    Cycle { shown: String },
    #[error("includes nest more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("more than {MAX_FILES} requirement files are read in all")]
    TooManyFiles,
    #[error("{shown} {source}")]
    Open { shown: String, source: Refused },
}

fn read_capped(file: File) -> Result<Vec<u8>, FileProblem> {
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(FileProblem::Read)?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(FileProblem::TooLarge);
    }
    Ok(data)
}

/// Why a file in the tree was not opened.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("does not exist in the function's code")]
    Missing,
    #[error("is, or is reached through, a symlink: refused")]
    Symlink,
    #[error("has a parent that is not a directory")]
    ParentNotADirectory,
    #[error("is not a regular file")]
    NotARegularFile,
    #[error("cannot be opened: {0}")]
    Io(io::Error),
}

/// Open `rel` below `root`, following no symlink, a regular file only.
fn open_in_tree(root: BorrowedFd<'_>, rel: &[String]) -> Result<File, Refused> {
    let (name, dirs) = rel.split_last().ok_or(Refused::NotARegularFile)?;
    let mut dir = fsat::open_dir(root, ".".as_ref()).map_err(Refused::Io)?;
    for part in dirs {
        dir = fsat::open_dir(dir.as_fd(), part.as_ref())
            .map_err(|e| why_not(dir.as_fd(), part, e))?;
    }
    let file =
        fsat::open_read(dir.as_fd(), name.as_ref()).map_err(|e| why_not(dir.as_fd(), name, e))?;
    let st = fsat::stat(file.as_fd()).map_err(Refused::Io)?;
    match Kind::of(&st) {
        Kind::File => Ok(file),
        _ => Err(Refused::NotARegularFile),
    }
}

/// Tell apart the ways opening `name` in `dir` can fail.
fn why_not(dir: BorrowedFd<'_>, name: &str, e: io::Error) -> Refused {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Refused::Missing,
        Some(libc::ELOOP | libc::ENOTDIR) => match fsat::lstat_at(dir, name.as_ref()) {
            Ok(st) if Kind::of(&st) == Kind::Symlink => Refused::Symlink,
            _ => Refused::ParentNotADirectory,
        },
        _ => Refused::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    /// (file, line, text, reason) of a refused line.
    fn refusal(dir: &Path) -> (String, usize, String, String) {
        match check_requirements(dir) {
            Err(DepsError::Requirement {
                file,
                line,
                text,
                reason,
            }) => (file, line, text, reason),
            other => panic!("expected a refused line, got {other:?}"),
        }
    }

    /// A file outside every tree, whose content must never show.
    fn secret() -> tempfile::TempDir {
        let dir = tree(&[("secret.txt", "TOPSECRET==1\n-i http://TOPSECRET\n")]);
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/x.txt"), "TOPSECRET\n").unwrap();
        dir
    }

    #[test]
    fn no_requirements_file_is_nothing_to_check() {
        let dir = tree(&[("main.py", "")]);
        assert!(!check_requirements(dir.path()).unwrap());
    }

    #[test]
    fn plain_requirements_and_includes_inside_the_tree_are_accepted() {
        let dir = tree(&[
            (
                "requirements.txt",
                "# deps\nrequests==2.31.0  # http\n-r sub/other.txt\n--requirement base.txt\n",
            ),
            (
                "sub/other.txt",
                "flask>=2,<4 \\\n  ; python_version >= '3.8'\n-r more.txt\n",
            ),
            ("sub/more.txt", "--requirement=../base.txt\n"),
            ("base.txt", "six\n"),
        ]);
        // `../base.txt` from sub/more.txt leaves nothing but is still '..'.
        let (file, line, text, reason) = refusal(dir.path());
        assert_eq!((file.as_str(), line), ("sub/more.txt", 1));
        assert_eq!(text, "--requirement=../base.txt");
        assert!(reason.contains("plain names"), "{reason}");
        fs::write(dir.path().join("sub/more.txt"), "--requirement=base2.txt\n").unwrap();
        fs::write(dir.path().join("sub/base2.txt"), "six\n").unwrap();
        assert!(check_requirements(dir.path()).unwrap());
    }

    #[test]
    fn includes_outside_the_tree_are_refused_without_reading_them() {
        let outside = secret();
        let shadow = outside.path().join("secret.txt");
        let cases = [
            (format!("-r {}\n", shadow.display()), "absolute"),
            ("-r /etc/shadow\n".to_string(), "absolute"),
            ("-r ../x\n".to_string(), "plain names"),
            ("-r http://127.0.0.1:1/x\n".to_string(), "URL"),
            ("--requirement=file:///etc/shadow\n".to_string(), "URL"),
        ];
        for (text, why) in cases {
            let dir = tree(&[("requirements.txt", &format!("ok==1\n{text}"))]);
            let err = check_requirements(dir.path()).unwrap_err().to_string();
            assert!(err.starts_with("requirements.txt, line 2: "), "{err}");
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("TOPSECRET==1"), "{err}");
        }
    }

    #[test]
    fn symlinked_includes_and_requirements_are_refused() {
        let outside = secret();
        let dir = tree(&[("requirements.txt", "-r link.txt\n")]);
        symlink(
            outside.path().join("secret.txt"),
            dir.path().join("link.txt"),
        )
        .unwrap();
        let (file, line, _, reason) = refusal(dir.path());
        assert_eq!((file.as_str(), line), ("requirements.txt", 1));
        assert!(
            reason.contains("link.txt") && reason.contains("symlink"),
            "{reason}"
        );

        // A symlinked directory on the way.
        let dir = tree(&[("requirements.txt", "-r d/x.txt\n")]);
        symlink(outside.path().join("d"), dir.path().join("d")).unwrap();
        let (_, _, _, reason) = refusal(dir.path());
        assert!(reason.contains("symlink"), "{reason}");
        assert!(!reason.contains("TOPSECRET"));

        // requirements.txt itself.
        let dir = tree(&[]);
        symlink(
            outside.path().join("secret.txt"),
            dir.path().join("requirements.txt"),
        )
        .unwrap();
        let err = check_requirements(dir.path()).unwrap_err();
        assert!(
            matches!(&err, DepsError::RequirementsFile { reason, .. } if reason.contains("symlink")),
            "{err}"
        );
        assert!(!err.to_string().contains("TOPSECRET"));
    }

    #[test]
    fn includes_must_be_regular_files_that_exist() {
        let dir = tree(&[("requirements.txt", "-r missing.txt\n-r sub\n")]);
        assert!(refusal(dir.path()).3.contains("missing.txt does not exist"));
        fs::write(dir.path().join("requirements.txt"), "-r sub\n").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(refusal(dir.path()).3.contains("not a regular file"));
        // A FIFO is refused without blocking on it.
        fs::write(dir.path().join("requirements.txt"), "-r pipe\n").unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(refusal(dir.path()).3.contains("not a regular file"));
    }

    #[test]
    fn cycles_depth_and_fan_out_are_bounded() {
        let dir = tree(&[
            ("requirements.txt", "-r a.txt\n"),
            ("a.txt", "x==1\n-r b.txt\n"),
            ("b.txt", "-r a.txt\n"),
        ]);
        let (file, line, _, reason) = refusal(dir.path());
        assert_eq!((file.as_str(), line), ("b.txt", 1));
        assert!(reason.contains("cycle"), "{reason}");

        // Eight includes deep is fine, nine is not.
        // requirements.txt -> r0 -> ... -> r7: eight includes.
        let mut files: Vec<(String, String)> = (0..7)
            .map(|i| (format!("r{i}.txt"), format!("-r r{}.txt\n", i + 1)))
            .collect();
        files.push(("r7.txt".into(), "six\n".into()));
        files.push(("requirements.txt".into(), "-r r0.txt\n".into()));
        let as_refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = tree(&as_refs);
        assert!(check_requirements(dir.path()).unwrap());
        fs::write(dir.path().join("r7.txt"), "-r r8.txt\n").unwrap();
        fs::write(dir.path().join("r8.txt"), "six\n").unwrap();
        assert!(refusal(dir.path()).3.contains("more than 8 deep"));

        // pip reads a file included twice twice: counted that way.
        let dir = tree(&[
            ("requirements.txt", &"-r a.txt\n".repeat(64)),
            ("a.txt", "six\n"),
        ]);
        assert!(refusal(dir.path()).3.contains("more than 64"));
    }

    #[test]
    fn files_are_at_most_64_kib_of_utf8() {
        let full = "#".repeat(64 * 1024 - 1) + "\n";
        let dir = tree(&[("requirements.txt", &full)]);
        assert!(check_requirements(dir.path()).unwrap());
        fs::write(dir.path().join("requirements.txt"), full + "x").unwrap();
        let err = check_requirements(dir.path()).unwrap_err().to_string();
        assert_eq!(err, "requirements.txt is larger than 64 KiB");
        fs::write(dir.path().join("requirements.txt"), b"six\xff\n").unwrap();
        let err = check_requirements(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn refused_lines_are_numbered_escaped_and_cut() {
        let long = format!("pkg==1 --index-url=http://{}", "e".repeat(300));
        let dir = tree(&[("requirements.txt", &format!("a\n\nb \\\n  c\n{long}\n"))]);
        // "b c" (lines 3-4) is one line for pip, and not a requirement.
        let (_, line, text, _) = refusal(dir.path());
        assert_eq!((line, text.as_str()), (3, "b   c"));
        fs::write(dir.path().join("requirements.txt"), format!("a\n{long}\n")).unwrap();
        let (_, line, text, reason) = refusal(dir.path());
        assert_eq!(line, 2);
        assert!(
            text.ends_with(&format!("… ({} bytes)", long.len())),
            "{text}"
        );
        assert!(text.chars().count() < 220, "{text}");
        assert!(reason.contains("--index-url"), "{reason}");
        fs::write(dir.path().join("requirements.txt"), "a\nb\x1b[2Jc\n").unwrap();
        let (_, line, text, _) = refusal(dir.path());
        assert_eq!((line, text.as_str()), (2, "b\\x1b[2Jc"));
    }
}
