//! Python specifics on the host side: precompiling a function's code to
//! bytecode when it is stored, so a worker imports bytecode instead of
//! compiling source on every invocation.

use std::path::Path;
use std::process::Command;

/// Compiles every regular `.py` file under the directory in argv[1] to
/// `__pycache__/*.pyc` with unchecked-hash invalidation (the store is
/// immutable), recording `/fn/...` as the file name for tracebacks.
/// Symlinks are never followed: a link could point at a host file, whose
/// bytecode would then leak into the sandbox. Syntax errors are left for
/// the import to report.
const PRECOMPILE: &str = r#"
import os, py_compile, sys
root = sys.argv[1]
for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
    dirnames[:] = [d for d in dirnames if d != "__pycache__" and not os.path.islink(os.path.join(dirpath, d))]
    for name in filenames:
        src = os.path.join(dirpath, name)
        if not name.endswith(".py") or os.path.islink(src) or not os.path.isfile(src):
            continue
        rel = os.path.relpath(src, root)
        try:
            py_compile.compile(src, dfile="/fn/" + rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            pass
"#;

/// Precompile the tree at `dir` with `python` (the interpreter the
/// sandboxes use; the host's own, since sandboxes bind the host's `/usr`).
pub fn precompile(python: &str, dir: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-I", "-c", PRECOMPILE])
        .arg(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .map_err(|e| format!("running {python} to precompile: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{python} failed to precompile ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precompiles_sources_but_not_links_or_broken_files() {
        if !Path::new("/usr/bin/python3").exists() {
            eprintln!("SKIPPED: needs /usr/bin/python3");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.py"),
            "def handler(e, c):\n    return 1\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/mod.py"), "X = 1\n").unwrap();
        std::fs::write(dir.path().join("broken.py"), "def (:\n").unwrap();
        std::fs::write(outside.path().join("secret.py"), "TOKEN = 'host secret'\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.py"), dir.path().join("link.py"))
            .unwrap();
        precompile("/usr/bin/python3", dir.path()).unwrap();
        let cache: Vec<String> = std::fs::read_dir(dir.path().join("__pycache__"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(cache.iter().any(|n| n.starts_with("main.")), "{cache:?}");
        assert!(
            !cache.iter().any(|n| n.starts_with("link.")),
            "followed a symlink: {cache:?}"
        );
        assert!(!cache.iter().any(|n| n.starts_with("broken.")), "{cache:?}");
        assert!(dir.path().join("pkg/__pycache__").is_dir());
        let pyc = std::fs::read_dir(dir.path().join("__pycache__"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("main."))
            .unwrap();
        let bytes = std::fs::read(pyc).unwrap();
        assert!(
            bytes.windows(11).any(|w| w == b"/fn/main.py"),
            "traceback name not /fn/main.py"
        );
    }
}
