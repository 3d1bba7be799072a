//! The files every sandbox of one emberd shares, laid out once at start in
//! the daemon's run directory and bound read-only into each sandbox:
//!
//! - `agent`: a copy of `ember-agent`, so bundles never depend on where the
//!   build tree is (nor on its directories being searchable from a user
//!   namespace);
//! - `etc/`: a generated, minimal `/etc` instead of the host's: only what
//!   interpreters read (see [`ETC_COPIED`] and [`write_etc`]), so no host
//!   configuration (application keys under `/etc`, account lists, network
//!   settings) reaches a function;
//! - `loader`: an execute-only (mode 0111) copy of the host's dynamic
//!   loader, bound over the loader's path inside. The kernel marks a
//!   process non-dumpable when it executes a program (or, for a dynamic
//!   executable, an ELF interpreter) it may not read, so every dynamically
//!   linked process in a sandbox (the Node.js runner above all, which
//!   cannot call `prctl` itself) is non-dumpable: processes of the same
//!   uid cannot trace it or read its memory and environment through
//!   `/proc`;
//! - `meminfo`, `loadavg`: stand-ins for `/proc/meminfo` and
//!   `/proc/loadavg` (which describe the host), saying what the sandbox
//!   has.

use crate::error::RuntimeError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Host files copied into the generated `/etc` as they are (when the host
/// has them), with why an interpreter reads them.
pub const ETC_COPIED: &[(&str, &str)] = &[
    (
        "ld.so.cache",
        "the dynamic loader finds libraries through it",
    ),
    (
        "localtime",
        "the time zone (content, not the host's symlink)",
    ),
    (
        "ssl/certs/ca-certificates.crt",
        "CA certificates for TLS clients",
    ),
    (
        "ssl/openssl.cnf",
        "OpenSSL's default configuration (Python, Node.js)",
    ),
    ("services", "port names (socket.getservbyname)"),
    ("protocols", "protocol names (socket.getprotobyname)"),
    ("mime.types", "file types (Python's mimetypes)"),
];

/// Host directories whose symlinks are recreated (targets unchanged):
/// Debian's alternatives system, through which `/usr` reaches the chosen
/// BLAS and LAPACK (numpy) among others.
const ETC_LINK_DIRS: &[&str] = &["alternatives"];

/// Host symlinks recreated as they are.
const ETC_LINKS: &[&str] = &["os-release"];

/// Paths inside the sandbox.
pub const LOADER_PATHS: &[&str] = &["/lib64/ld-linux-x86-64.so.2"];

/// What [`SandboxFiles::prepare`] made.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub agent: PathBuf,
    pub etc: PathBuf,
    /// The execute-only loader copy and the (resolved) path inside the
    /// sandbox it is bound over; `None` on a host without the x86_64
    /// glibc loader.
    pub loader: Option<(PathBuf, PathBuf)>,
    pub meminfo: PathBuf,
    pub loadavg: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Bundle {
        path: path.to_path_buf(),
        source,
    }
}

impl SandboxFiles {
    /// Lay the files out in `dir` (created, searchable by all: sandboxes
    /// in user namespaces reach their bundles through it). `memory_bytes`
    /// is what `/proc/meminfo` reports as the sandbox's memory.
    pub fn prepare(
        dir: &Path,
        agent: &Path,
        memory_bytes: u64,
    ) -> Result<SandboxFiles, RuntimeError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).map_err(io(dir))?;
        let files = SandboxFiles {
            agent: dir.join("agent"),
            etc: dir.join("etc"),
            loader: None,
            meminfo: dir.join("meminfo"),
            loadavg: dir.join("loadavg"),
        };
        replace_with_copy(agent, &files.agent, 0o755)?;
        write_etc(Path::new("/etc"), &files.etc)?;
        write_file(&files.meminfo, &meminfo(memory_bytes))?;
        write_file(&files.loadavg, "0.00 0.00 0.00 1/1 1\n")?;
        let loader = LOADER_PATHS
            .iter()
            .find_map(|p| fs::canonicalize(p).ok().filter(|p| p.is_file()));
        let loader = match loader {
            Some(real) => {
                let copy = dir.join("loader");
                replace_with_copy(&real, &copy, 0o111)?;
                Some((copy, real))
            }
            None => None,
        };
        Ok(SandboxFiles { loader, ..files })
    }
}

/// Copy `from` to `to` through a temporary name and a rename, so a
/// sandbox being created meanwhile binds either the old or the new file.
fn replace_with_copy(from: &Path, to: &Path, mode: u32) -> Result<(), RuntimeError> {
    let tmp = to.with_extension("new");
    let _ = fs::remove_file(&tmp);
    fs::copy(from, &tmp).map_err(io(from))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    fs::rename(&tmp, to).map_err(io(to))
}

fn write_file(path: &Path, text: &str) -> Result<(), RuntimeError> {
    fs::write(path, text).map_err(io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io(path))
}

/// `/proc/meminfo` for a sandbox of `bytes`: what Node.js's `os.totalmem()`
/// and similar readers use.
fn meminfo(bytes: u64) -> String {
    let kb = bytes / 1024;
    format!(
        "MemTotal:       {kb:>8} kB\nMemFree:        {kb:>8} kB\nMemAvailable:   {kb:>8} kB\n\
         Buffers:               0 kB\nCached:                0 kB\nSwapCached:            0 kB\n\
         SwapTotal:             0 kB\nSwapFree:              0 kB\n"
    )
}

/// Generate the sandbox's `/etc` at `dest` from the host's `/etc` at
/// `host`: accounts of the sandbox alone, loopback-only name resolution,
/// and [`ETC_COPIED`] / [`ETC_LINK_DIRS`] / [`ETC_LINKS`] from the host.
/// Rebuilt from scratch each time.
pub fn write_etc(host: &Path, dest: &Path) -> Result<(), RuntimeError> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io(dest))?;
    }
    fs::create_dir_all(dest).map_err(io(dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(io(dest))?;
    let generated = [
        (
            "passwd",
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             nobody:x:65534:65534:ember sandbox user:/tmp:/usr/sbin/nologin\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
        (
            "hosts",
            "127.0.0.1\tlocalhost ember\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        ("hostname", "ember\n"),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\n\
             networks: files\nprotocols: files\nservices: files\n",
        ),
        // No interfaces, no servers: lookups fail at once.
        ("resolv.conf", "# ember sandboxes have no network\n"),
    ];
    for (name, text) in generated {
        write_file(&dest.join(name), text)?;
    }
    for (name, _why) in ETC_COPIED {
        let from = host.join(name);
        // Content only (a host symlink such as localtime is resolved).
        let Ok(text) = fs::read(&from) else { continue };
        let to = dest.join(name);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&to, text).map_err(io(&to))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).map_err(io(&to))?;
    }
    for link in ETC_LINKS {
        if let Ok(target) = fs::read_link(host.join(link)) {
            let to = dest.join(link);
            std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
        }
    }
    for dir in ETC_LINK_DIRS {
        let Ok(entries) = fs::read_dir(host.join(dir)) else {
            continue;
        };
        let to_dir = dest.join(dir);
        fs::create_dir_all(&to_dir).map_err(io(&to_dir))?;
        for e in entries.flatten() {
            if let Ok(target) = fs::read_link(e.path()) {
                let to = to_dir.join(e.file_name());
                std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_etc_holds_no_host_secret_and_keeps_what_interpreters_read() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        fs::write(h.join("passwd"), "alice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        fs::write(h.join("shadow"), "alice:$6$secret").unwrap();
        fs::write(h.join("app-api-key"), "SECRET").unwrap();
        fs::write(h.join("ld.so.cache"), "cache").unwrap();
        fs::create_dir_all(h.join("ssl/certs")).unwrap();
        fs::write(h.join("ssl/certs/ca-certificates.crt"), "CERTS").unwrap();
        fs::create_dir(h.join("alternatives")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/blas/libblas.so.3", h.join("alternatives/libblas"))
            .unwrap();
        fs::write(h.join("alternatives/README"), "text").unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("etc");
        write_etc(h, &dest).unwrap();
        let passwd = fs::read_to_string(dest.join("passwd")).unwrap();
        assert!(passwd.contains("nobody:x:65534") && !passwd.contains("alice"));
        assert!(!dest.join("shadow").exists());
        assert!(!dest.join("app-api-key").exists());
        assert_eq!(fs::read(dest.join("ld.so.cache")).unwrap(), b"cache");
        assert_eq!(
            fs::read(dest.join("ssl/certs/ca-certificates.crt")).unwrap(),
            b"CERTS"
        );
        assert_eq!(
            fs::read_link(dest.join("alternatives/libblas")).unwrap(),
            Path::new("/usr/lib/blas/libblas.so.3")
        );
        assert!(!dest.join("alternatives/README").exists());
        // Regenerating replaces everything.
        fs::write(dest.join("stale"), "x").unwrap();
        write_etc(h, &dest).unwrap();
        assert!(!dest.join("stale").exists());
    }

    #[test]
    fn meminfo_reports_the_sandbox_size() {
        let m = meminfo(512 << 20);
        assert!(m.starts_with("MemTotal:         524288 kB\n"), "{m}");
        assert!(m.contains("SwapTotal:             0 kB"));
    }
}
