//! Symlinks where the deploy build writes. Between unpacking and sealing,
//! the build (pip, bytecode compilation, dependency checks) runs as root
//! inside the new tree; a symlink planted where it writes would redirect
//! that write anywhere on the host, and one where it reads would feed it
//! a host file. So the tree may hold no symlink named:
//!
//! - `__pycache__`, at any depth (bytecode);
//! - `.ember` at the root, or `.ember/python` (vendored Python packages);
//! - `node_modules`, or `node_modules/.bin`, at any depth (Node.js
//!   packages and their executables);
//!
//! and `requirements.txt` and `package.json` at the root, if present,
//! must be regular files (the build reads them).

use crate::error::{io_err, StoreError};
use crate::fsat::{self, Kind};
use crate::names::RelPath;
use std::os::fd::AsFd;
use std::path::Path;

/// Check the tree at `root`, walking it without following any link.
pub fn check_build_paths(root: &Path) -> Result<(), StoreError> {
    let fd = fsat::open_dir_path(root).map_err(io_err(root))?;
    let mut todo = vec![RelPath::root()];
    while let Some(rel) = todo.pop() {
        let path = root.join(rel.to_string());
        let dir = fsat::open_dir_rel(fd.as_fd(), rel.parts()).map_err(io_err(&path))?;
        for name in fsat::names(dir.as_fd()).map_err(io_err(&path))? {
            let name = name.map_err(io_err(&path))?;
            let child = rel.join(&name)?;
            let st = fsat::lstat_at(dir.as_fd(), &name).map_err(io_err(&path))?;
            let kind = Kind::of(&st);
            check(&child, kind)?;
            if kind == Kind::Dir {
                todo.push(child);
            }
        }
    }
    Ok(())
}

fn check(rel: &RelPath, kind: Kind) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::BadEntry {
        entry: rel.shown(),
        reason,
    };
    if kind == Kind::Symlink {
        if let Some(place) = build_writes_at(rel.parts()) {
            return Err(refuse(format!(
                "is a symlink where the deploy build writes ({place}): refused"
            )));
        }
    }
    if kind != Kind::File && build_reads(rel.parts()) {
        return Err(refuse(
            "must be a regular file (the deploy build reads it): refused".to_string(),
        ));
    }
    Ok(())
}

/// Which of the build's places `parts` is, if any.
fn build_writes_at(parts: &[String]) -> Option<&'static str> {
    let name = parts.last()?.as_str();
    let parent = parts.len().checked_sub(2).map(|i| parts[i].as_str());
    match (parent, name, parts.len()) {
        (_, "__pycache__", _) => Some("__pycache__"),
        (_, "node_modules", _) => Some("node_modules"),
        (Some("node_modules"), ".bin", _) => Some("node_modules/.bin"),
        (None, ".ember", 1) => Some(".ember"),
        (Some(".ember"), "python", 2) => Some(".ember/python"),
        _ => None,
    }
}

fn build_reads(parts: &[String]) -> bool {
    matches!(parts, [name] if name == "requirements.txt" || name == "package.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn reason(root: &Path) -> String {
        match check_build_paths(root) {
            Err(StoreError::BadEntry { entry, reason }) => format!("{entry}: {reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn symlinks_where_the_build_writes_are_refused() {
        let cases = [
            ("__pycache__", "__pycache__"),
            ("pkg/sub/__pycache__", "__pycache__"),
            (".ember", ".ember"),
            (".ember/python", ".ember/python"),
            ("node_modules", "node_modules"),
            ("node_modules/.bin", "node_modules/.bin"),
            ("web/node_modules/.bin", "node_modules/.bin"),
        ];
        for (at, place) in cases {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(at);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink("/etc", &p).unwrap();
            let r = reason(dir.path());
            assert!(
                r.starts_with(&format!("{at}: ")) && r.contains(&format!("({place})")),
                "{at}: {r}"
            );
        }
    }

    #[test]
    fn build_inputs_must_be_regular_files() {
        for name in ["requirements.txt", "package.json"] {
            let dir = tempfile::tempdir().unwrap();
            symlink("/etc/shadow", dir.path().join(name)).unwrap();
            assert!(
                reason(dir.path()).contains("must be a regular file"),
                "{name}"
            );
        }
    }

    #[test]
    fn the_same_names_elsewhere_or_as_real_entries_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("__pycache__")).unwrap();
        std::fs::create_dir_all(d.join(".ember/python")).unwrap();
        std::fs::create_dir_all(d.join("node_modules/.bin")).unwrap();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("requirements.txt"), "x==1\n").unwrap();
        // Not where the build looks: a link named like an input deeper
        // down, `python` outside `.ember`, `.bin` outside node_modules.
        symlink("/etc/passwd", d.join("sub/requirements.txt")).unwrap();
        symlink("/etc", d.join("sub/python")).unwrap();
        symlink("/etc", d.join(".bin")).unwrap();
        symlink("../x", d.join("node_modules/left-pad")).unwrap();
        check_build_paths(d).unwrap();
    }
}
