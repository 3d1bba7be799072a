//! Tar extension headers, the only tar data read whole into memory, so
//! each is capped before a byte of it is read: GNU long names and long
//! link targets (`L`, `K`: at most 4096 bytes, `PATH_MAX`), PAX extended
//! and global headers (`x`, `g`: at most 16 KiB of records). Their header
//! block, payload and padding count against the budget like any entry.
//!
//! What they say about the next entry is collected in [`Pending`]: its
//! name (`L` or PAX `path`), link target (`K` or PAX `linkpath`) and
//! size (PAX `size`). PAX global headers are read and ignored; so are PAX
//! records other than those three (times, owners, charsets), except
//! `GNU.sparse.*`, which marks a sparse file and is refused.

use super::Budget;
use crate::error::StoreError;
use std::io::{self, Read};

/// Size of a tar block.
pub(super) const BLOCK: u64 = 512;
/// Longest GNU long name or long link payload.
pub(super) const GNU_NAME_MAX: u64 = 4096;
/// Longest PAX header payload.
pub(super) const PAX_MAX: u64 = 16 * 1024;

/// `size` rounded up to whole blocks (saturating: sizes are hostile).
pub(super) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extension {
    LongName,
    LongLink,
    Pax,
    PaxGlobal,
}

impl Extension {
    pub(super) fn of(kind: tar::EntryType) -> Option<Extension> {
        match kind {
            tar::EntryType::GNULongName => Some(Extension::LongName),
            tar::EntryType::GNULongLink => Some(Extension::LongLink),
            tar::EntryType::XHeader => Some(Extension::Pax),
            tar::EntryType::XGlobalHeader => Some(Extension::PaxGlobal),
            _ => None,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Extension::LongName => "GNU long name ('L')",
            Extension::LongLink => "GNU long link ('K')",
            Extension::Pax => "PAX extended ('x')",
            Extension::PaxGlobal => "PAX global ('g')",
        }
    }

    fn cap(self) -> u64 {
        match self {
            Extension::LongName | Extension::LongLink => GNU_NAME_MAX,
            Extension::Pax | Extension::PaxGlobal => PAX_MAX,
        }
    }

    /// Read this header's payload of `size` bytes from `data`: refused
    /// before reading anything if over the cap, counted against the
    /// budget (header block and padding too) before reading.
    pub(super) fn read(
        self,
        data: &mut impl Read,
        size: u64,
        budget: &mut Budget,
    ) -> Result<Vec<u8>, StoreError> {
        if size > self.cap() {
            return Err(StoreError::ExtensionTooLarge {
                header: self.label(),
                size,
                limit: self.cap(),
            });
        }
        budget.spend(BLOCK + padded(size))?;
        let mut buf = Vec::with_capacity(size as usize);
        data.take(size)
            .read_to_end(&mut buf)
            .map_err(StoreError::BadArchive)?;
        if buf.len() as u64 != size {
            return Err(StoreError::BadArchive(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside a {} header", self.label()),
            )));
        }
        Ok(buf)
    }
}

/// What extension headers said about the next entry.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    pub(super) path: Option<Vec<u8>>,
    pub(super) link: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
    pub(super) sparse: bool,
}

/// Extension headers read since the last entry.
#[derive(Debug, Default)]
pub(super) struct Pending {
    over: Overrides,
    /// Which per-entry headers were seen (a second one of a kind for the
    /// same entry is refused: readers disagree on which wins).
    seen: Vec<Extension>,
}

fn malformed(ext: Extension, reason: impl Into<String>) -> StoreError {
    StoreError::BadExtension {
        header: ext.label(),
        reason: reason.into(),
    }
}

impl Pending {
    /// Take in one extension header's payload.
    pub(super) fn add(&mut self, ext: Extension, data: Vec<u8>) -> Result<(), StoreError> {
        if ext == Extension::PaxGlobal {
            return Ok(());
        }
        if self.seen.contains(&ext) {
            return Err(malformed(ext, "a second one for the same entry"));
        }
        self.seen.push(ext);
        match ext {
            Extension::LongName => set(&mut self.over.path, gnu_string(data), ext),
            Extension::LongLink => set(&mut self.over.link, gnu_string(data), ext),
            _ => self.add_pax(&data),
        }
    }

    fn add_pax(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let ext = Extension::Pax;
        for record in pax_records(data) {
            let (key, value) = record.map_err(|r| malformed(ext, r.to_string()))?;
            match key {
                b"path" => set(&mut self.over.path, value.to_vec(), ext)?,
                b"linkpath" => set(&mut self.over.link, value.to_vec(), ext)?,
                b"size" => self.over.size = Some(pax_size(value)?),
                k if k.starts_with(b"GNU.sparse.") => self.over.sparse = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// What was said about the entry that follows; starts afresh.
    pub(super) fn take(&mut self) -> Overrides {
        self.seen.clear();
        std::mem::take(&mut self.over)
    }

    /// At the end of the archive: nothing may be left waiting for an
    /// entry.
    pub(super) fn finish(self) -> Result<(), StoreError> {
        match self.seen.first() {
            Some(ext) => Err(malformed(*ext, "it ends the archive: no entry follows it")),
            None => Ok(()),
        }
    }
}

fn set(slot: &mut Option<Vec<u8>>, value: Vec<u8>, ext: Extension) -> Result<(), StoreError> {
    if slot.is_some() {
        return Err(malformed(
            ext,
            "it names an entry already named by another header",
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// A GNU long name or link: NUL-terminated.
fn gnu_string(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn pax_size(value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(Extension::Pax, "its size record is not a decimal number"))
}

/// PAX records: `"<len> <key>=<value>\n"`, `len` counting the whole
/// record, itself included.
fn pax_records(mut data: &[u8]) -> impl Iterator<Item = Result<KeyValue<'_>, PaxRecordError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let record = pax_record(data);
        match record {
            Ok((len, kv)) => {
                data = &data[len..];
                Some(Ok(kv))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

type KeyValue<'a> = (&'a [u8], &'a [u8]);

/// Why a PAX record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum PaxRecordError {
    #[error("a record does not start with its length")]
    NoLength,
    #[error("a record length is not a number")]
    LengthNotANumber,
    #[error("a record's length does not match its end")]
    LengthMismatch,
    #[error("a record has no '='")]
    NoEquals,
}

fn pax_record(data: &[u8]) -> Result<(usize, KeyValue<'_>), PaxRecordError> {
    let space = data
        .iter()
        .take(8)
        .position(|&b| b == b' ')
        .ok_or(PaxRecordError::NoLength)?;
    let digits = &data[..space];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(PaxRecordError::NoLength);
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(PaxRecordError::LengthNotANumber)?;
    if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
        return Err(PaxRecordError::LengthMismatch);
    }
    let body = &data[space + 1..len - 1];
    let eq = body
        .iter()
        .position(|&b| b == b'=')
        .ok_or(PaxRecordError::NoEquals)?;
    Ok((len, (&body[..eq], &body[eq + 1..])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::UnpackLimits;

    fn budget() -> Budget {
        Budget::new(UnpackLimits::default())
    }

    #[test]
    fn pax_records_parse_and_malformed_ones_are_refused() {
        let data = b"20 path=a/long/name\n11 size=42\n";
        let recs: Vec<_> = pax_records(data).map(|r| r.unwrap()).collect();
        assert_eq!(
            recs,
            [
                (&b"path"[..], &b"a/long/name"[..]),
                (&b"size"[..], &b"42"[..])
            ]
        );
        for bad in [
            &b"99 path=x\n"[..],
            b"7 path=x\n",
            b"x path=x\n",
            b"9 pathx\n\n",
        ] {
            assert!(pax_records(bad).any(|r| r.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn pending_collects_names_and_refuses_two_for_one_entry() {
        let mut p = Pending::default();
        p.add(Extension::LongName, b"very/long\0".to_vec()).unwrap();
        p.add(Extension::LongLink, b"target\0\0".to_vec()).unwrap();
        p.add(Extension::PaxGlobal, b"garbage".to_vec()).unwrap();
        let o = p.take();
        assert_eq!(o.path.as_deref(), Some(&b"very/long"[..]));
        assert_eq!(o.link.as_deref(), Some(&b"target"[..]));
        p.finish().unwrap();

        let mut p = Pending::default();
        p.add(Extension::LongName, b"a".to_vec()).unwrap();
        let err = p.add(Extension::Pax, b"10 path=b\n".to_vec()).unwrap_err();
        assert!(err.to_string().contains("already named"), "{err}");

        let mut p = Pending::default();
        p.add(Extension::Pax, b"22 GNU.sparse.major=1\n".to_vec())
            .unwrap();
        assert!(p.take().sparse);
        p.add(Extension::LongName, b"x".to_vec()).unwrap();
        assert!(p
            .finish()
            .unwrap_err()
            .to_string()
            .contains("no entry follows"));
    }

    #[test]
    fn an_oversized_header_is_refused_before_reading() {
        struct Unreadable;
        impl Read for Unreadable {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("read the payload of an oversized header");
            }
        }
        for (ext, cap) in [(Extension::LongName, 4096), (Extension::Pax, 16 * 1024)] {
            let err = ext
                .read(&mut Unreadable, cap + 1, &mut budget())
                .unwrap_err();
            assert!(
                matches!(err, StoreError::ExtensionTooLarge { size, limit, .. } if size == cap + 1 && limit == cap),
                "{err}"
            );
        }
        let data = ext_data(4096);
        assert_eq!(
            Extension::LongLink
                .read(&mut &data[..], 4096, &mut budget())
                .unwrap()
                .len(),
            4096
        );
    }

    #[test]
    fn headers_count_against_the_byte_budget() {
        let mut b = Budget::new(UnpackLimits {
            max_bytes: 1024,
            max_entries: 10,
        });
        let data = ext_data(600);
        let err = Extension::LongName
            .read(&mut &data[..], 600, &mut b)
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 1024 }), "{err}");
    }

    fn ext_data(n: usize) -> Vec<u8> {
        vec![b'n'; n]
    }
}
