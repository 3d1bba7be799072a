//! Reading a tar stream into a directory within the budget.
//!
//! The `tar` crate's ordinary iteration reads GNU long names, long links
//! and PAX headers whole into memory, whatever size they declare, before
//! handing out the entry they describe: a 1 MB gzip declaring a 512 MiB
//! long name made emberd allocate gigabytes. Its raw iteration
//! (`Entries::raw(true)`) hands out every header as it comes, extension
//! headers included, and reads nothing of a payload unless asked. We use
//! that rather than a reader of our own: the crate still does the fiddly,
//! well-tested part (checksums, octal and base-256 numbers, the ustar
//! name prefix), and the part that allocates, the extension payloads, is
//! ours, capped (`extensions.rs`).
//!
//! In raw mode the crate finds the next header from the size in this
//! header, so a PAX `size` record that disagrees with it is refused (it
//! would make readers disagree about where entries are).

use super::extensions::{padded, Extension, Overrides, Pending, BLOCK};
use super::place::{self, bad, Dest};
use super::{Budget, UnpackLimits};
use crate::error::StoreError;
use crate::names::RelPath;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

/// Unpack the tar stream `reader` into `dest`, an existing empty
/// directory.
pub(crate) fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<(), StoreError> {
    let dest = Dest::open_empty(dest)?;
    let mut budget = Budget::new(limits);
    let mut pending = Pending::default();
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(StoreError::BadArchive)?;
    for entry in entries.raw(true) {
        let mut entry = entry.map_err(StoreError::BadArchive)?;
        budget.entry()?;
        let size = entry
            .header()
            .entry_size()
            .map_err(StoreError::BadArchive)?;
        if let Some(ext) = Extension::of(entry.header().entry_type()) {
            let data = ext.read(&mut entry, size, &mut budget)?;
            pending.add(ext, data)?;
            continue;
        }
        // Counted before any of it is read; whatever this entry's data
        // is, the crate reads past it to the next header.
        budget.spend(BLOCK.saturating_add(padded(size)))?;
        let over = pending.take();
        write_entry(&dest, &mut entry, size, over, &mut budget)?;
    }
    pending.finish()
}

/// The entry's name: from an extension header if one gave it.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>, over: &Overrides) -> Vec<u8> {
    match &over.path {
        Some(p) => p.clone(),
        None => entry.header().path_bytes().into_owned(),
    }
}

fn write_entry<R: Read>(
    dest: &Dest,
    entry: &mut tar::Entry<'_, R>,
    size: u64,
    over: Overrides,
    budget: &mut Budget,
) -> Result<(), StoreError> {
    let raw_name = entry_name(entry, &over);
    let rel = RelPath::from_archive(&raw_name)?;
    if let Some(pax) = over.size.filter(|&s| s != size) {
        let why = format!("its PAX size record ({pax}) disagrees with its header ({size})");
        return Err(bad(&rel, why));
    }
    if over.sparse {
        return Err(bad(&rel, refused_kind("a sparse file")));
    }
    let kind = entry.header().entry_type();
    if rel.is_root() {
        // "./" itself: the destination is already there.
        return match kind.is_dir() {
            true => Ok(()),
            false => Err(bad(&rel, "names the archive's root but is not a directory")),
        };
    }
    if kind.is_dir() {
        let parent = dest.parent(&rel, budget)?;
        place::make_dir(dest, parent.as_fd(), &rel)
    } else if kind.is_file() || kind.is_contiguous() {
        if raw_name.ends_with(b"/") {
            return Err(bad(&rel, "is a regular file whose name ends with '/'"));
        }
        let exec = entry
            .header()
            .mode()
            .map(|m| m & 0o111 != 0)
            .unwrap_or(false);
        let parent = dest.parent(&rel, budget)?;
        let out = place::create_file(dest, parent.as_fd(), &rel, exec)?;
        place::copy_exact(dest, &rel, entry, out, size)
    } else if kind.is_symlink() {
        let target = match over.link {
            Some(t) => t,
            None => entry
                .header()
                .link_name_bytes()
                .unwrap_or_default()
                .into_owned(),
        };
        let parent = dest.parent(&rel, budget)?;
        place::make_symlink(dest, parent.as_fd(), &rel, &target)
    } else {
        Err(bad(&rel, refused_kind(kind_name(kind))))
    }
}

fn refused_kind(what: &str) -> String {
    format!("is {what}: only regular files, directories and symlinks are allowed")
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::GNUSparse => "a sparse file",
        _ => "of an unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::test_archives::*;
    use crate::unpack::unpack_tar_gz;
    use flate2::read::GzDecoder;
    use std::cell::Cell;
    use std::fs;
    use std::rc::Rc;

    fn unpack(gz: &[u8]) -> (tempfile::TempDir, Result<(), StoreError>) {
        unpack_with(gz, UnpackLimits::default())
    }

    fn unpack_with(gz: &[u8], limits: UnpackLimits) -> (tempfile::TempDir, Result<(), StoreError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_tar_gz(gz, dir.path(), limits);
        (dir, r)
    }

    /// Read a file whose path may be too long for the kernel.
    fn read_deep(root: &Path, rel: &str) -> Vec<u8> {
        use std::io::Read;
        let parts: Vec<&str> = rel.split('/').collect();
        let (name, dirs) = parts.split_last().unwrap();
        let top = crate::fsat::open_dir_path(root).unwrap();
        let dir = crate::fsat::open_dir_rel(top.as_fd(), dirs).unwrap();
        let mut f = crate::fsat::open_read(dir.as_fd(), name.as_ref()).unwrap();
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        out
    }

    fn bad_entry(r: Result<(), StoreError>) -> (String, String) {
        match r {
            Err(StoreError::BadEntry { entry, reason }) => (entry, reason),
            other => panic!("expected BadEntry, got {other:?}"),
        }
    }

    #[test]
    fn a_huge_long_link_is_refused_having_read_a_bounded_prefix() {
        // ~1 MB of gzip whose tar declares a 512 MiB GNU long link.
        let declared = 512 * 1024 * 1024;
        let tar = header_declaring(tar::EntryType::GNULongLink, declared, &noise(1 << 20));
        let upload = gz(&tar);
        assert!(upload.len() > 1_000_000, "{}", upload.len());
        let count = Rc::new(Cell::new(0));
        let reader = Counting {
            inner: GzDecoder::new(&upload[..]),
            count: count.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_tar(reader, dir.path(), UnpackLimits::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::ExtensionTooLarge { size, limit: 4096, .. } if size == declared),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("GNU long link ('K')") && msg.contains("536870912"),
            "{msg}"
        );
        assert!(count.get() < 64 * 1024, "read {} bytes", count.get());
        // The same through the public entry point.
        let (_d, r) = unpack(&upload);
        assert!(matches!(r, Err(StoreError::ExtensionTooLarge { .. })));
    }

    #[test]
    fn huge_long_names_and_pax_headers_are_refused_before_reading() {
        for (kind, limit) in [
            (tar::EntryType::GNULongName, 4096),
            (tar::EntryType::XHeader, 16 * 1024),
            (tar::EntryType::XGlobalHeader, 16 * 1024),
        ] {
            let tar = header_declaring(kind, limit + 1, &noise(100_000));
            let count = Rc::new(Cell::new(0));
            let reader = Counting {
                inner: &tar[..],
                count: count.clone(),
            };
            let dir = tempfile::tempdir().unwrap();
            let err = unpack_tar(reader, dir.path(), UnpackLimits::default()).unwrap_err();
            assert!(
                matches!(err, StoreError::ExtensionTooLarge { size, .. } if size == limit + 1),
                "{kind:?}: {err}"
            );
            assert!(count.get() <= 1024, "{kind:?}: read {}", count.get());
        }
    }

    #[test]
    fn gnu_and_pax_long_names_and_links_are_honoured() {
        let long_dir = "d".repeat(120);
        let long_target = format!("../{}", "t".repeat(150));
        let gz_data = targz(|b| {
            // The builder writes a GNU long name ('L') past 100 bytes.
            file(b, &format!("{long_dir}/main.py"), b"x = 1\n");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            // ... and a GNU long link ('K') for a long target.
            b.append_link(&mut h, "link", &long_target).unwrap();
            pax(b, &["path=from/pax.py", "mtime=1.5", "uname=root"]);
            raw(b, "short-name", tar::EntryType::Regular, None, b"pax\n");
            pax(b, &["linkpath=pax-target"]);
            raw(b, "plink", tar::EntryType::Symlink, Some("ignored"), b"");
        });
        let (dir, r) = unpack(&gz_data);
        r.unwrap();
        let d = dir.path();
        assert_eq!(
            fs::read(d.join(&long_dir).join("main.py")).unwrap(),
            b"x = 1\n"
        );
        assert_eq!(
            fs::read_link(d.join("link")).unwrap().to_str().unwrap(),
            long_target
        );
        assert_eq!(fs::read(d.join("from/pax.py")).unwrap(), b"pax\n");
        assert!(!d.join("short-name").exists());
        assert_eq!(
            fs::read_link(d.join("plink")).unwrap().to_str().unwrap(),
            "pax-target"
        );
    }

    #[test]
    fn pax_global_headers_are_read_and_ignored() {
        let gz_data = targz(|b| {
            let mut data = Vec::new();
            data.extend_from_slice(b"18 path=elsewhere\n");
            raw(b, "global", tar::EntryType::XGlobalHeader, None, &data);
            file(b, "main.py", b"ok");
        });
        let (dir, r) = unpack(&gz_data);
        r.unwrap();
        assert_eq!(fs::read(dir.path().join("main.py")).unwrap(), b"ok");
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn a_pax_size_that_disagrees_with_the_header_is_refused() {
        let gz_data = targz(|b| {
            pax(b, &["size=1000"]);
            raw(b, "f.py", tar::EntryType::Regular, None, b"12");
        });
        let (_d, r) = unpack(&gz_data);
        let (entry, reason) = bad_entry(r);
        assert_eq!(entry, "f.py");
        assert!(reason.contains("PAX size record (1000)"), "{reason}");
        // Agreeing is fine.
        let gz_data = targz(|b| {
            pax(b, &["size=2"]);
            raw(b, "f.py", tar::EntryType::Regular, None, b"12");
        });
        unpack(&gz_data).1.unwrap();
    }

    #[test]
    fn two_names_for_one_entry_and_a_dangling_extension_are_refused() {
        let gz_data = targz(|b| {
            raw(
                b,
                "././@LongLink",
                tar::EntryType::GNULongName,
                None,
                b"a.py\0",
            );
            pax(b, &["path=b.py"]);
            raw(b, "x", tar::EntryType::Regular, None, b"");
        });
        let err = unpack(&gz_data).1.unwrap_err();
        assert!(matches!(err, StoreError::BadExtension { .. }), "{err}");
        let gz_data = targz(|b| {
            file(b, "main.py", b"");
            raw(
                b,
                "././@LongLink",
                tar::EntryType::GNULongName,
                None,
                b"a.py\0",
            );
        });
        let err = unpack(&gz_data).1.unwrap_err();
        assert!(err.to_string().contains("no entry follows"), "{err}");
    }

    #[test]
    fn links_devices_fifos_and_sparse_files_are_refused() {
        let kinds = [
            (tar::EntryType::Link, "hard link"),
            (tar::EntryType::Char, "character device"),
            (tar::EntryType::Block, "block device"),
            (tar::EntryType::Fifo, "FIFO"),
            (tar::EntryType::GNUSparse, "sparse file"),
            (tar::EntryType::new(b'V'), "unknown type"),
        ];
        for (kind, what) in kinds {
            let gz_data = targz(|b| raw(b, "x", kind, Some("main.py"), b""));
            let (entry, reason) = bad_entry(unpack(&gz_data).1);
            assert_eq!(entry, "x");
            assert!(
                reason.contains(what) && reason.contains("only regular files"),
                "{reason}"
            );
        }
        // PAX-format sparse files (GNU.sparse.* records) too.
        let gz_data = targz(|b| {
            pax(b, &["GNU.sparse.major=1", "GNU.sparse.minor=0"]);
            raw(b, "s", tar::EntryType::Regular, None, b"");
        });
        assert!(bad_entry(unpack(&gz_data).1).1.contains("sparse"));
        assert!(matches!(
            unpack(b"definitely not gzip").1,
            Err(StoreError::BadArchive(_))
        ));
    }

    #[test]
    fn every_header_block_and_padding_counts_toward_the_budget() {
        // Three empty files: three header blocks of 512 bytes.
        let three = targz(|b| (0..3).for_each(|i| file(b, &format!("f{i}"), b"")));
        let limits = |max_bytes| UnpackLimits {
            max_bytes,
            max_entries: 100,
        };
        unpack_with(&three, limits(1536)).1.unwrap();
        let r = unpack_with(&three, limits(1535)).1;
        assert!(
            matches!(r, Err(StoreError::TooLarge { limit: 1535 })),
            "{r:?}"
        );
        // One byte of data costs a padded block.
        let one = targz(|b| file(b, "f", b"x"));
        unpack_with(&one, limits(1024)).1.unwrap();
        assert!(unpack_with(&one, limits(1023)).1.is_err());
        // An extension header counts as an entry.
        let named = targz(|b| {
            raw(
                b,
                "././@LongLink",
                tar::EntryType::GNULongName,
                None,
                b"a.py\0",
            );
            raw(b, "x", tar::EntryType::Regular, None, b"");
        });
        let one_entry = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 1,
        };
        let r = unpack_with(&named, one_entry).1;
        assert!(
            matches!(r, Err(StoreError::TooManyEntries { limit: 1 })),
            "{r:?}"
        );
    }

    #[test]
    fn enforces_size_and_entry_limits() {
        let gz_data = targz(|b| file(b, "big.bin", &vec![7u8; 4096]));
        let limits = UnpackLimits {
            max_bytes: 4095,
            max_entries: 10,
        };
        let r = unpack_with(&gz_data, limits).1;
        assert!(matches!(r, Err(StoreError::TooLarge { limit: 4095 })));
        let gz_data = targz(|b| (0..5).for_each(|i| file(b, &format!("f{i}.py"), b"")));
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 3,
        };
        let r = unpack_with(&gz_data, limits).1;
        assert!(matches!(r, Err(StoreError::TooManyEntries { limit: 3 })));
        // A size near u64::MAX neither overflows nor is read.
        let mut tar = header_declaring(tar::EntryType::Regular, u64::MAX >> 1, b"");
        tar.extend_from_slice(&[0u8; 1024]);
        let r = unpack(&gz(&tar)).1;
        assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
    }

    #[test]
    fn rejects_path_traversal() {
        for name in ["../evil.py", "/abs.py", "a/../../evil.py"] {
            let gz_data = targz(|b| raw(b, name, tar::EntryType::Regular, None, b"x"));
            let (dir, r) = unpack(&gz_data);
            bad_entry(r);
            assert!(!dir.path().parent().unwrap().join("evil.py").exists());
        }
    }

    #[test]
    fn refuses_to_write_through_a_planted_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let gz_data = targz(|b| {
            raw(b, "link", tar::EntryType::Symlink, Some(&target), b"");
            raw(b, "link/owned.py", tar::EntryType::Regular, None, b"x");
        });
        let (entry, reason) = bad_entry(unpack(&gz_data).1);
        assert_eq!(entry, "link/owned.py");
        assert!(reason.contains("not a directory"), "{reason}");
        assert!(!outside.path().join("owned.py").exists());
        // Nor over one: a file entry after a symlink of the same name.
        let gz_data = targz(|b| {
            raw(b, "x.py", tar::EntryType::Symlink, Some("/etc/passwd"), b"");
            raw(b, "x.py", tar::EntryType::Regular, None, b"owned");
        });
        assert!(bad_entry(unpack(&gz_data).1).1.contains("duplicate"));
    }

    #[test]
    fn names_past_the_file_system_limits_are_bad_entries() {
        let long = format!("pkg/{}.py", "n".repeat(300));
        let gz_data = targz(|b| file(b, &long, b""));
        let (entry, reason) = bad_entry(unpack(&gz_data).1);
        assert!(reason.contains("255 bytes"), "{reason}");
        assert!(entry.ends_with("… (307 bytes)"), "{entry}");
        // Within them, even a 4095-byte path unpacks.
        let max = vec!["p".repeat(255); 16].join("/");
        let gz_data = targz(|b| file(b, &max, b"deep"));
        let (dir, r) = unpack(&gz_data);
        r.unwrap();
        // (Longer than PATH_MAX with the temporary directory in front.)
        assert_eq!(read_deep(dir.path(), &max), b"deep");
    }

    #[test]
    fn names_must_be_utf8_and_are_shown_escaped() {
        let gz_data = targz(|b| raw_bytes(b, b"bad\xff.py", tar::EntryType::Regular, None, b""));
        let (entry, reason) = bad_entry(unpack(&gz_data).1);
        assert_eq!(entry, "bad\\xff.py");
        assert!(reason.contains("UTF-8"));
        let gz_data =
            targz(|b| raw_bytes(b, b"\x1b[2J\x07/../x", tar::EntryType::Regular, None, b""));
        let msg = unpack(&gz_data).1.unwrap_err().to_string();
        assert!(msg.contains("\\x1b[2J\\x07/../x"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg:?}");
    }

    #[test]
    fn a_symlink_where_the_build_writes_is_refused() {
        let gz_data = targz(|b| {
            file(b, "main.py", b"");
            raw(b, "__pycache__", tar::EntryType::Symlink, Some("/etc"), b"");
        });
        let (entry, reason) = bad_entry(unpack(&gz_data).1);
        assert_eq!(entry, "__pycache__");
        assert!(reason.contains("where the deploy build writes"), "{reason}");
    }

    #[test]
    fn the_destination_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("left"), "").unwrap();
        let gz_data = targz(|b| file(b, "main.py", b""));
        let r = unpack_tar_gz(&gz_data, dir.path(), UnpackLimits::default());
        assert!(matches!(r, Err(StoreError::Io { .. })), "{r:?}");
    }
}
