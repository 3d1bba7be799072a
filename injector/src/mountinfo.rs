//! Reading `/proc/<pid>/mountinfo`, to verify what is (not) mounted in a
//! sandbox's mount namespace.

use std::io;
use std::path::PathBuf;

/// Mount points listed in `/proc/<pid>/mountinfo` (octal escapes decoded).
pub fn mount_points(pid: u32) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(parse_mount_points(&text))
}

pub fn parse_mount_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points_with_escapes() {
        let text = "22 1 0:21 / / ro,relatime - overlay overlay rw\n\
                    30 22 0:40 / /fn ro,nosuid - ext4 /dev/vda rw\n\
                    31 22 0:41 / /tmp\\040dir rw - tmpfs tmpfs rw\n";
        let pts = parse_mount_points(text);
        assert_eq!(
            pts,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/fn"),
                PathBuf::from("/tmp dir")
            ]
        );
    }
}
