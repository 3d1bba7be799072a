//! A function's dependencies, prepared at deploy time inside its own code
//! tree, so they become part of its content-addressed code and no other
//! function ever sees them.
//!
//! - Python: a `requirements.txt` is installed with pip (the sandbox's
//!   interpreter, `--target`) into [`PYTHON_DEPS_DIR`], which the worker
//!   puts on `sys.path`. With a wheel directory pip runs offline
//!   (`--no-index --find-links`). [`check_requirements`] says whether a
//!   requirements file names only packages and versions.
//! - Node.js: dependencies are shipped installed, in `node_modules` next
//!   to `package.json` (ember runs no package manager for JavaScript); a
//!   `package.json` that declares dependencies without `node_modules` is
//!   refused, since every invocation would fail to import them.

mod pep508;
mod req_lines;
mod requirements;

pub use requirements::check_requirements;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A piece of a requirements file quoted in a reason: escaped, cut to
/// 60 characters (the line itself is quoted in full, up to 200).
fn snippet(text: &str) -> String {
    ember_injector::names::escape_truncated(text.as_bytes(), 60)
}

/// Where vendored Python packages live, relative to the code root (the
/// zygote adds `/fn/.ember/python` to `sys.path`).
pub const PYTHON_DEPS_DIR: &str = ".ember/python";

/// Longest a pip install may take.
const PIP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("installing {requirements}: pip failed ({status}): {output}")]
    Pip {
        requirements: PathBuf,
        status: String,
        output: String,
    },
    #[error("installing {requirements}: running {python} -m pip: {source}")]
    Spawn {
        requirements: PathBuf,
        python: String,
        source: std::io::Error,
    },
    #[error("installing {requirements}: pip took longer than {} s", PIP_TIMEOUT.as_secs())]
    Timeout { requirements: PathBuf },
    #[error("{package_json} declares dependencies ({names}) but the function has no node_modules: run `npm install` (or `npm ci`) in the function directory before deploying")]
    NodeModulesMissing {
        package_json: PathBuf,
        names: String,
    },
    #[error("{path} is not valid JSON: {message}")]
    BadPackageJson { path: PathBuf, message: String },
    /// A line of a requirements file pip must not act on. `file` is
    /// relative to the code tree, `text` escaped and cut to 200
    /// characters.
    #[error("{file}, line {line}: {reason}: {text}")]
    Requirement {
        file: String,
        line: usize,
        text: String,
        reason: String,
    },
    /// A requirements file that cannot be checked as a whole (a symlink,
    /// too large, not UTF-8).
    #[error("{file} {reason}")]
    RequirementsFile { file: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where pip finds packages.
#[derive(Debug, Clone, Default)]
pub struct PipSource {
    /// A directory of wheels: install from it only, no network.
    pub wheels_dir: Option<PathBuf>,
}

/// Where pip's home is: nowhere. HOME in the uploaded tree would let the
/// upload configure pip (`~/.config/pip/pip.conf`: an index, a log file
/// written as root); an existing directory could hold someone's config.
const PIP_HOME: &str = "/nonexistent";

/// Install `dir/requirements.txt`, if there is one, into
/// `dir/.ember/python` with `python`'s pip. Returns whether it did.
///
/// The requirements are checked first ([`check_requirements`]), and pip
/// runs isolated from the tree (`python -I`: no current directory or
/// user site-packages on `sys.path`, where an uploaded `pip/` or `.pth`
/// file would run as root; HOME outside it).
pub fn vendor_python(python: &str, dir: &Path, source: &PipSource) -> Result<bool, DepsError> {
    if !check_requirements(dir)? {
        return Ok(false);
    }
    let requirements = dir.join("requirements.txt");
    let target = dir.join(PYTHON_DEPS_DIR);
    let mut cmd = Command::new(python);
    cmd.args([
        "-I",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-cache-dir",
        "--no-compile",
        "--only-binary=:all:",
        "--target",
    ])
    .arg(&target)
    .arg("-r")
    .arg(&requirements)
    .current_dir(dir)
    .env_clear()
    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
    .env("HOME", PIP_HOME)
    .env("PIP_NO_WARN_SCRIPT_LOCATION", "1");
    if let Some(wheels) = &source.wheels_dir {
        cmd.arg("--no-index").arg("--find-links").arg(wheels);
    }
    // Proxy and index settings of the host pass through when pip may go
    // online.
    for var in [
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "PIP_CERT",
    ] {
        if let Ok(v) = std::env::var(var) {
            if source.wheels_dir.is_none() || var != "PIP_FIND_LINKS" {
                cmd.env(var, v);
            }
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|source| DepsError::Spawn {
        requirements: requirements.clone(),
        python: python.to_string(),
        source,
    })?;
    let out = wait_with_timeout(child, PIP_TIMEOUT).ok_or_else(|| DepsError::Timeout {
        requirements: requirements.clone(),
    })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let text = text.trim();
        // The end of pip's output is where it says what went wrong.
        let tail: String = if text.len() > 2000 {
            let mut from = text.len() - 2000;
            while !text.is_char_boundary(from) {
                from += 1;
            }
            text[from..].to_string()
        } else {
            text.to_string()
        };
        return Err(DepsError::Pip {
            requirements,
            status: out.status.to_string(),
            output: tail,
        });
    }
    // pip's own bookkeeping, not importable code.
    let _ = std::fs::remove_dir_all(target.join("bin"));
    Ok(true)
}

fn wait_with_timeout(
    mut child: std::process::Child,
    limit: Duration,
) -> Option<std::process::Output> {
    use std::io::Read;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // Drain both pipes on threads so pip never blocks on a full one.
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(std::process::Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    })
}

/// Check a Node.js function's dependencies are shipped: a `package.json`
/// with `dependencies` needs a `node_modules` directory beside it.
pub fn check_node(dir: &Path) -> Result<(), DepsError> {
    let pj = dir.join("package.json");
    let text = match std::fs::read(&pj) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(DepsError::Io { path: pj, source }),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| DepsError::BadPackageJson {
            path: pj.clone(),
            message: e.to_string(),
        })?;
    let names: Vec<String> = v["dependencies"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() || dir.join("node_modules").is_dir() {
        return Ok(());
    }
    Err(DepsError::NodeModulesMissing {
        package_json: pj,
        names: names.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal pure-Python wheel, written by hand (no network, no build
    /// tools): enough for pip to install offline.
    pub fn write_wheel(dir: &Path, name: &str, module_text: &str) -> PathBuf {
        use std::io::Write;
        let file = dir.join(format!("{name}-1.0-py3-none-any.whl"));
        let f = std::fs::File::create(&file).unwrap();
        let mut zip = ZipWriter::new(f);
        let dist = format!("{name}-1.0.dist-info");
        let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
        let wheel =
            "Wheel-Version: 1.0\nGenerator: ember-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let entries = [
            (format!("{name}.py"), module_text.to_string()),
            (format!("{dist}/METADATA"), metadata),
            (format!("{dist}/WHEEL"), wheel.to_string()),
        ];
        let mut record = String::new();
        for (path, text) in &entries {
            zip.add(path, text.as_bytes());
            record.push_str(&format!("{path},,\n"));
        }
        record.push_str(&format!("{dist}/RECORD,,\n"));
        zip.add(&format!("{dist}/RECORD"), record.as_bytes());
        zip.finish().flush().unwrap();
        file
    }

    /// Just enough of the zip format (stored, no compression) for a wheel.
    struct ZipWriter<W: std::io::Write> {
        out: W,
        offset: u32,
        central: Vec<u8>,
        count: u16,
    }

    impl<W: std::io::Write> ZipWriter<W> {
        fn new(out: W) -> Self {
            ZipWriter {
                out,
                offset: 0,
                central: Vec::new(),
                count: 0,
            }
        }

        fn add(&mut self, name: &str, data: &[u8]) {
            let crc = crc32(data);
            let mut local = Vec::new();
            local.extend_from_slice(&0x04034b50u32.to_le_bytes());
            local.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            local.extend_from_slice(&crc.to_le_bytes());
            local.extend_from_slice(&(data.len() as u32).to_le_bytes());
            local.extend_from_slice(&(data.len() as u32).to_le_bytes());
            local.extend_from_slice(&(name.len() as u16).to_le_bytes());
            local.extend_from_slice(&0u16.to_le_bytes());
            local.extend_from_slice(name.as_bytes());
            self.out.write_all(&local).unwrap();
            self.out.write_all(data).unwrap();
            let c = &mut self.central;
            c.extend_from_slice(&0x02014b50u32.to_le_bytes());
            c.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            c.extend_from_slice(&crc.to_le_bytes());
            c.extend_from_slice(&(data.len() as u32).to_le_bytes());
            c.extend_from_slice(&(data.len() as u32).to_le_bytes());
            c.extend_from_slice(&(name.len() as u16).to_le_bytes());
            c.extend_from_slice(&[0; 12]);
            c.extend_from_slice(&self.offset.to_le_bytes());
            c.extend_from_slice(name.as_bytes());
            self.offset += (local.len() + data.len()) as u32;
            self.count += 1;
        }

        fn finish(mut self) -> W {
            let size = self.central.len() as u32;
            self.out.write_all(&self.central).unwrap();
            let mut end = Vec::new();
            end.extend_from_slice(&0x06054b50u32.to_le_bytes());
            end.extend_from_slice(&[0; 4]);
            end.extend_from_slice(&self.count.to_le_bytes());
            end.extend_from_slice(&self.count.to_le_bytes());
            end.extend_from_slice(&size.to_le_bytes());
            end.extend_from_slice(&self.offset.to_le_bytes());
            end.extend_from_slice(&0u16.to_le_bytes());
            self.out.write_all(&end).unwrap();
            self.out
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn have_pip() -> bool {
        Command::new("/usr/bin/python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn requirements_are_vendored_offline_from_a_wheel_dir() {
        if !have_pip() {
            eprintln!("SKIPPED: needs /usr/bin/python3 with pip (apt-get install python3-pip)");
            return;
        }
        let wheels = tempfile::tempdir().unwrap();
        write_wheel(wheels.path(), "embertestdep", "VALUE = 'vendored'\n");
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("requirements.txt"), "embertestdep==1.0\n").unwrap();
        let src = PipSource {
            wheels_dir: Some(wheels.path().to_path_buf()),
        };
        assert!(vendor_python("/usr/bin/python3", code.path(), &src).unwrap());
        let module = code.path().join(PYTHON_DEPS_DIR).join("embertestdep.py");
        assert_eq!(
            std::fs::read_to_string(module).unwrap(),
            "VALUE = 'vendored'\n"
        );
        // A package the wheel dir does not have fails with pip's reason,
        // and never reaches the network.
        std::fs::write(
            code.path().join("requirements.txt"),
            "no-such-pkg-ember==9\n",
        )
        .unwrap();
        let err = vendor_python("/usr/bin/python3", code.path(), &src)
            .unwrap_err()
            .to_string();
        assert!(err.contains("requirements.txt"), "{err}");
        assert!(err.contains("no-such-pkg-ember"), "{err}");
    }

    #[test]
    fn pip_runs_isolated_from_the_uploaded_tree() {
        if !have_pip() {
            eprintln!("SKIPPED: needs /usr/bin/python3 with pip (apt-get install python3-pip)");
            return;
        }
        let wheels = tempfile::tempdir().unwrap();
        write_wheel(wheels.path(), "embertestdep", "VALUE = 'vendored'\n");
        let outside = tempfile::tempdir().unwrap();
        let marker = |what: &str| outside.path().join(what);
        let code = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: String| {
            let p = code.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("requirements.txt", "embertestdep==1.0\n".into());
        // `python -m pip` run in the tree would import this pip, as root.
        let touch = |what: &str| format!("open({:?}, 'w').close()\n", marker(what));
        put("pip/__init__.py", touch("cwd-pip"));
        put("pip/__main__.py", touch("cwd-pip"));
        // With HOME in the tree: a user pip.conf and user site-packages.
        put(
            ".ember/.config/pip/pip.conf",
            format!("[global]\nlog = {}\n", marker("pip-conf.log").display()),
        );
        put(
            ".ember/.pip/pip.conf",
            format!("[global]\nlog = {}\n", marker("legacy-conf.log").display()),
        );
        let version = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys; print('python%d.%d' % sys.version_info[:2])",
            ])
            .output()
            .unwrap();
        let version = String::from_utf8(version.stdout).unwrap();
        put(
            &format!(
                ".ember/.local/lib/{}/site-packages/evil.pth",
                version.trim()
            ),
            format!("import os; {}", touch("user-site")),
        );
        let src = PipSource {
            wheels_dir: Some(wheels.path().to_path_buf()),
        };
        assert!(vendor_python("/usr/bin/python3", code.path(), &src).unwrap());
        let module = code.path().join(PYTHON_DEPS_DIR).join("embertestdep.py");
        assert!(module.is_file(), "the real pip did not run");
        for what in ["cwd-pip", "pip-conf.log", "legacy-conf.log", "user-site"] {
            assert!(
                !marker(what).exists(),
                "{what}: pip ran code or config from the tree"
            );
        }
    }

    #[test]
    fn requirements_are_checked_before_pip_runs() {
        let code = tempfile::tempdir().unwrap();
        std::fs::write(
            code.path().join("requirements.txt"),
            "--index-url http://127.0.0.1:1/simple\nrequests\n",
        )
        .unwrap();
        // No interpreter needed: the check refuses before running it.
        let err =
            vendor_python("/nonexistent/python", code.path(), &PipSource::default()).unwrap_err();
        assert!(
            matches!(err, DepsError::Requirement { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn no_requirements_means_nothing_to_do() {
        let code = tempfile::tempdir().unwrap();
        assert!(!vendor_python("/nonexistent/python", code.path(), &PipSource::default()).unwrap());
        assert!(!code.path().join(PYTHON_DEPS_DIR).exists());
    }

    #[test]
    fn node_dependencies_must_be_shipped() {
        let code = tempfile::tempdir().unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(code.path().join("package.json"), r#"{"name":"f"}"#).unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(
            code.path().join("package.json"),
            r#"{"dependencies":{"left-pad":"1.3.0"}}"#,
        )
        .unwrap();
        let err = check_node(code.path()).unwrap_err().to_string();
        assert!(
            err.contains("left-pad") && err.contains("npm install"),
            "{err}"
        );
        std::fs::create_dir(code.path().join("node_modules")).unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(code.path().join("package.json"), "{nope").unwrap();
        assert!(check_node(code.path()).is_err());
    }
}
