//! Packing a function directory as tar.gz for upload.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Names never uploaded: caches and VCS metadata.
const SKIP: &[&str] = &[
    "__pycache__",
    ".git",
    ".hg",
    ".svn",
    ".mypy_cache",
    ".pytest_cache",
];

pub fn tar_gz(dir: &Path) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    add_dir(&mut tar, dir, Path::new(""))?;
    let gz = tar.into_inner().context("finishing archive")?;
    gz.finish().context("compressing archive")
}

fn add_dir<W: std::io::Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))
        .with_context(|| format!("reading {}", root.join(rel).display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name_str = name.to_string_lossy();
        if SKIP.contains(&name_str.as_ref()) || name_str.ends_with(".pyc") {
            continue;
        }
        let rel = rel.join(&name);
        let full = root.join(&rel);
        let ft = e.file_type()?;
        if ft.is_dir() {
            tar.append_dir(&rel, &full)?;
            add_dir(tar, root, &rel)?;
        } else {
            tar.append_path_with_name(&full, &rel)
                .with_context(|| format!("adding {}", full.display()))?;
        }
    }
    Ok(())
}
