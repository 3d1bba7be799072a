//! Building archives for tests, hostile ones included.

use flate2::write::GzEncoder;
use std::io::Write;

pub(crate) fn gz(tar: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

pub(crate) fn targz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    gz(&b.into_inner().unwrap())
}

pub(crate) fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, path, body).unwrap();
}

/// Write a raw header so paths the builder would refuse can be tested.
pub(crate) fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    body: &[u8],
) {
    raw_bytes(b, path.as_bytes(), kind, link.map(str::as_bytes), body)
}

/// [`raw`] with any bytes as names (at most 100).
pub(crate) fn raw_bytes(
    b: &mut tar::Builder<Vec<u8>>,
    path: &[u8],
    kind: tar::EntryType,
    link: Option<&[u8]>,
    body: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
    }
    h.set_cksum();
    b.append(&h, body).unwrap();
}

/// A header of `kind` declaring `size` bytes, followed by `body` (which
/// may be shorter than declared), as raw tar bytes.
pub(crate) fn header_declaring(kind: tar::EntryType, size: u64, body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("././@LongLink").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A PAX extended header carrying `records` ("key=value" each).
pub(crate) fn pax(b: &mut tar::Builder<Vec<u8>>, records: &[&str]) {
    let mut data = Vec::new();
    for r in records {
        // The length counts itself: find the fixed point.
        let mut len = r.len() + 3;
        while format!("{len} {r}\n").len() != len {
            len = format!("{len} {r}\n").len();
        }
        data.extend_from_slice(format!("{len} {r}\n").as_bytes());
    }
    raw(b, "PaxHeader", tar::EntryType::XHeader, None, &data);
}

/// Counts the bytes read through it.
pub(crate) struct Counting<R> {
    pub(crate) inner: R,
    pub(crate) count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Bytes that do not compress: a ~1 MB gzip needs ~1 MB of them.
pub(crate) fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
