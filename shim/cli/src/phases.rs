//! What the spinner of `ember deploy` and `ember test` says. emberd
//! installs a function's dependencies inside the deploy (or test) request,
//! so the client cannot follow pip: it names the phase and shows the time
//! elapsed.

use std::path::Path;

/// emberd will pip-install the directory's `requirements.txt` (Python
/// only: Node.js functions ship their `node_modules`). No runtime given
/// means emberd's default, python3.
pub fn installs_python_deps(dir: &Path, runtime: Option<&str>) -> bool {
    runtime != Some("node") && dir.join("requirements.txt").is_file()
}

const INSTALLING: &str = "emberd is installing dependencies from requirements.txt (wheels only)";

pub fn packing(dir: &Path) -> String {
    format!("packing {}", dir.display())
}

/// KiB rounded up: a small archive is "1 KiB", not "0 KiB".
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// Over a local socket the upload is over at once: with dependencies the
/// wait is pip's, and the line stays short enough for 80 columns.
pub fn deploying(archive_bytes: usize, deps: bool) -> String {
    if deps {
        INSTALLING.to_string()
    } else {
        format!("uploading {} KiB to emberd", kib(archive_bytes))
    }
}

pub fn testing(dir: &Path, deps: bool) -> String {
    if deps {
        format!("{INSTALLING}, then running {}", dir.display())
    } else {
        format!("emberd is running {} in a throwaway sandbox", dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_are_installed_for_python_with_requirements_only() {
        let d = tempfile::tempdir().unwrap();
        assert!(!installs_python_deps(d.path(), None));
        std::fs::write(d.path().join("requirements.txt"), "x\n").unwrap();
        assert!(installs_python_deps(d.path(), None));
        assert!(installs_python_deps(d.path(), Some("python3")));
        assert!(!installs_python_deps(d.path(), Some("node")));
    }

    #[test]
    fn packing_names_the_directory() {
        assert_eq!(packing(Path::new("fn/hello")), "packing fn/hello");
    }

    #[test]
    fn deploying_says_the_size_and_whether_emberd_installs_deps() {
        assert_eq!(deploying(10, false), "uploading 1 KiB to emberd");
        assert_eq!(deploying(2048, false), "uploading 2 KiB to emberd");
        assert_eq!(
            deploying(3000, true),
            "emberd is installing dependencies from requirements.txt (wheels only)"
        );
    }

    #[test]
    fn testing_says_whether_emberd_installs_deps() {
        let dir = Path::new("hello");
        assert_eq!(
            testing(dir, false),
            "emberd is running hello in a throwaway sandbox"
        );
        assert_eq!(
            testing(dir, true),
            "emberd is installing dependencies from requirements.txt (wheels only), then running hello"
        );
    }
}
