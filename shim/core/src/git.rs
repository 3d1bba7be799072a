//! Deploying from a git repository: what emberd does with `"code":
//! {"git": {"repo", "ref", "subdir"}}`.
//!
//! A repository is hostile input like an upload: its config may name
//! commands (`core.fsmonitor`, `core.sshCommand`, hooks), its tree may hold
//! symlinks to host files, huge blobs, submodules. So emberd:
//!
//! - runs git only as a host id no account and no running sandbox uses
//!   when it is root: the first id of a block of the sandboxes' user
//!   namespace range (`--userns-base`), held for the deploy as a sandbox
//!   holds its block (not 65534, "nobody", whose processes include runsc's
//!   Sentry), as uid and gid, with no supplementary groups and `no_new_privs` (checked in the child
//!   before exec), in a process group of its own, with a cleared
//!   environment: no system or global config, no prompt, a private `HOME`,
//!   only the `file`, `git`, `http` and `https` transports, hooks off;
//! - clones bare with `--no-local` (objects come through `git upload-pack`,
//!   so nothing in the source's `.git` is linked or copied as a file) into
//!   a private directory: when root, a tmpfs of a bounded size owned by
//!   that id under the run directory's `builds/`, removed on drop (and by
//!   the next start's recovery after a crash);
//! - never checks anything out and fetches no submodule: the tree of the
//!   commit (or of one directory of it) comes out of `git archive` as a tar
//!   stream, written by the hardened unpacker within the code's budget
//!   (symlinks stay symlinks, resolved only inside a sandbox);
//! - kills git (its whole group) past the deadline, and keeps the first
//!   few KiB of its stderr for the error message.
//!
//! The repository must be readable by any user (git's id is no account's):
//! a host path root alone can read is refused with `git_unreachable`,
//! saying so.

use ember_api::function::{GitCode, GitOrigin};
use ember_api::ErrorCode;
use ember_injector::{unpack_tar, StoreError, UnpackLimits};
use ember_runtimes::userns::IdRange;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Transports git may use (`ext::` and the like run commands).
const PROTOCOLS: &str = "file:git:http:https";

/// git's global config: the settings of every git process of a deploy,
/// `git upload-pack` in the source repository included (a local clone
/// strips `-c` settings from its environment). The source repository's
/// own config outranks it there; upload-pack reads nothing from it that
/// runs a command, and runs as git's unprivileged id anyway.
const GLOBAL_CONFIG: &str = "\
[safe]
\tdirectory = *
[core]
\thooksPath = /dev/null
\tfsmonitor = false
[protocol \"file\"]
\tallow = always
[transfer]
\tfsckObjects = true
[submodule]
\trecurse = false
[credential]
\thelper =
";

/// How much of git's stderr is kept for an error message.
const STDERR_KEEP: usize = 4096;

/// How much of git's stdout is read where only a line is expected.
const STDOUT_KEEP: usize = 4096;

static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a deploy from git failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("code.git: {0}")]
    Invalid(String),
    #[error("{who} cannot read {repo}: {detail}")]
    Unreachable {
        who: &'static str,
        repo: String,
        detail: String,
    },
    #[error("ref {reference:?} names no commit of {repo}")]
    RefNotFound { repo: String, reference: String },
    #[error("subdir {subdir:?} is not a directory of {repo} at commit {commit}")]
    SubdirNotFound {
        repo: String,
        subdir: String,
        commit: String,
    },
    #[error("git {step} on {repo} took longer than {} s (--git-timeout-s)", .timeout.as_secs())]
    Timeout {
        step: &'static str,
        repo: String,
        timeout: Duration,
    },
    #[error("the repository {repo} does not fit in the {} MiB emberd clones it into", .limit >> 20)]
    TooLarge { repo: String, limit: u64 },
    #[error("git {step} failed on {repo} ({status}): {detail}")]
    Failed {
        step: &'static str,
        repo: String,
        status: String,
        detail: String,
    },
    #[error("running git: {0}")]
    Host(String),
    #[error(transparent)]
    Unpack(#[from] StoreError),
}

impl GitError {
    /// The API's code for this error (unpack errors are the store's).
    pub fn code(&self) -> ErrorCode {
        match self {
            GitError::Invalid(_) => ErrorCode::InvalidRequest,
            GitError::Unreachable { .. } => ErrorCode::GitUnreachable,
            GitError::RefNotFound { .. } => ErrorCode::GitRefNotFound,
            GitError::SubdirNotFound { .. } => ErrorCode::GitSubdirNotFound,
            GitError::Timeout { .. } | GitError::Failed { .. } => ErrorCode::GitFailed,
            GitError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            GitError::Host(_) => ErrorCode::Internal,
            GitError::Unpack(StoreError::TooLarge { .. } | StoreError::TooManyEntries { .. }) => {
                ErrorCode::PayloadTooLarge
            }
            GitError::Unpack(StoreError::Io { .. }) => ErrorCode::Internal,
            GitError::Unpack(_) => ErrorCode::InvalidCode,
        }
    }
}

/// A git deploy request whose every part was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub repo: String,
    /// `None`: the repository's HEAD.
    pub reference: Option<String>,
    /// Relative, `/`-separated, no `.` or `..`, no trailing `/`.
    pub subdir: Option<String>,
}

impl GitRequest {
    /// Check a request; nothing of it reaches git unchecked.
    pub fn check(code: &GitCode) -> Result<GitRequest, GitError> {
        check_repo(&code.repo).map_err(GitError::Invalid)?;
        if let Some(r) = &code.reference {
            check_ref(r).map_err(GitError::Invalid)?;
        }
        let subdir = match &code.subdir {
            Some(s) => check_subdir(s).map_err(GitError::Invalid)?,
            None => None,
        };
        Ok(GitRequest {
            repo: code.repo.clone(),
            reference: code.reference.clone(),
            subdir,
        })
    }

    fn rev(&self) -> &str {
        self.reference.as_deref().unwrap_or("HEAD")
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// An absolute host path, or a URL of an allowed transport.
fn check_repo(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > 4096 || has_control(repo) {
        return Err(format!(
            "repo {repo:?} must be 1 to 4096 characters, none of them control characters"
        ));
    }
    if repo.starts_with('/') {
        return Ok(());
    }
    let scheme = repo
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    if PROTOCOLS.split(':').any(|p| p == scheme) {
        return Ok(());
    }
    Err(format!(
        "repo {repo:?} must be an absolute host path or a file://, git://, http:// or https:// URL"
    ))
}

/// A branch, tag or commit name: plain characters, never an option.
fn check_ref(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 255
        && !r.starts_with('-')
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.ends_with('.')
        && !r.contains("..")
        && !r.contains("//")
        && r.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-' | b'+' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "ref {r:?} must be a branch, tag or commit name (letters, digits, `._/+@-`, not \
             starting with `-` or `/`, no `..`)"
        ))
    }
}

/// A relative directory of the repository, normalized (`None`: its root).
fn check_subdir(s: &str) -> Result<Option<String>, String> {
    let bad = |why: &str| Err(format!("subdir {s:?} {why}"));
    if s.len() > 1024 || has_control(s) || s.contains('\\') {
        return bad("must be under 1024 characters, without control characters or `\\`");
    }
    if s.starts_with('/') {
        return bad("must be relative to the repository's root");
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("must not hold empty, `.` or `..` components");
    }
    Ok(Some(trimmed.to_string()))
}

/// How emberd runs git.
#[derive(Debug, Clone)]
pub struct GitSetup {
    /// Where the private clone directory goes (searchable by all).
    pub scratch_parent: PathBuf,
    /// When root: the id range git's id comes from, and its lock
    /// directory (those of the sandboxes' user namespaces).
    pub ids: Option<(IdRange, PathBuf)>,
    /// For all of git's steps together.
    pub timeout: Duration,
    /// The clone's room (a tmpfs of this size when root).
    pub clone_bytes: u64,
}

/// Clone `req`'s repository, resolve its ref and unpack the commit's tree
/// (or its subdir) into `dest`, an empty directory, within `limits`.
/// Returns what the function record keeps.
pub fn fetch(
    req: &GitRequest,
    setup: &GitSetup,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<GitOrigin, GitError> {
    // Held until git is done: no sandbox gets this block meanwhile.
    let block = match (&setup.ids, nix::unistd::geteuid().is_root()) {
        (Some((range, locks)), true) => Some(
            range
                .allocate(locks)
                .map_err(|e| GitError::Host(format!("an id for git: {e}")))?,
        ),
        _ => None,
    };
    let uid = block.as_ref().map(|b| b.host_id(0));
    let scratch = Scratch::create(&setup.scratch_parent, uid, setup.clone_bytes)
        .map_err(|e| GitError::Host(format!("private clone directory: {e}")))?;
    let config = home_config(&scratch.home());
    std::fs::write(&config, GLOBAL_CONFIG)
        .map_err(|e| GitError::Host(format!("{}: {e}", config.display())))?;
    let git = Git {
        home: scratch.home(),
        uid,
        deadline: Instant::now() + setup.timeout,
        timeout: setup.timeout,
        repo: &req.repo,
    };
    let clone = git.run(
        "clone",
        &[
            "clone",
            "--bare",
            "--no-local",
            "--quiet",
            "--template=",
            "--",
            &req.repo,
            "repo.git",
        ],
        |out| bounded(out, STDOUT_KEEP),
    )?;
    if !clone.status.success() {
        return Err(clone_failed(&git, setup, clone));
    }
    let rev = format!("{}^{{commit}}", req.rev());
    let parsed = git.run(
        "rev-parse",
        &[
            "--git-dir=repo.git",
            "rev-parse",
            "--verify",
            "--quiet",
            &rev,
        ],
        |out| bounded(out, STDOUT_KEEP),
    )?;
    let commit = parsed.out.trim().to_string();
    let is_sha = matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !parsed.status.success() || !is_sha {
        return Err(GitError::RefNotFound {
            repo: req.repo.clone(),
            reference: req.rev().to_string(),
        });
    }
    let tree = match &req.subdir {
        Some(sub) => {
            let spec = format!("{commit}:{sub}");
            let kind = git.run(
                "cat-file",
                &["--git-dir=repo.git", "cat-file", "-t", &spec],
                |out| bounded(out, STDOUT_KEEP),
            )?;
            if !kind.status.success() || kind.out.trim() != "tree" {
                return Err(GitError::SubdirNotFound {
                    repo: req.repo.clone(),
                    subdir: sub.clone(),
                    commit,
                });
            }
            spec
        }
        // A tree, not the commit: no `export-subst` expansion.
        None => format!("{commit}^{{tree}}"),
    };
    let archive = git.run(
        "archive",
        &["--git-dir=repo.git", "archive", "--format=tar", &tree],
        |out| {
            let unpacked = unpack_tar(&mut *out, dest, limits);
            if unpacked.is_ok() {
                // The record padding after the end-of-archive blocks:
                // git must not die of a closed pipe for it.
                bounded(&mut Read::take(&mut *out, 1 << 20), 0);
            }
            unpacked
        },
    )?;
    // An unpacker's refusal first: git may have died of the closed pipe.
    archive.out?;
    if !archive.status.success() {
        return Err(git.failed("archive", &archive.status, &archive.err));
    }
    Ok(GitOrigin {
        repo: req.repo.clone(),
        reference: req.rev().to_string(),
        commit,
        subdir: req.subdir.clone(),
    })
}

/// The error of a clone that exited non-zero.
fn clone_failed(git: &Git<'_>, setup: &GitSetup, r: Ran<String>) -> GitError {
    if r.err.contains("No space left on device") {
        return GitError::TooLarge {
            repo: git.repo.to_string(),
            limit: setup.clone_bytes,
        };
    }
    if r.err.contains("fsck") {
        return git.failed("clone", &r.status, &r.err);
    }
    GitError::Unreachable {
        who: if git.uid.is_some() {
            "git, running as an unprivileged user,"
        } else {
            "git"
        },
        repo: git.repo.to_string(),
        detail: one_line(&r.err),
    }
}

/// git's stderr as one line for a message.
fn one_line(err: &str) -> String {
    let s = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if s.is_empty() {
        "(git said nothing)".into()
    } else {
        s
    }
}

/// What one git run gave.
struct Ran<T> {
    status: ExitStatus,
    out: T,
    err: String,
}

struct Git<'a> {
    home: PathBuf,
    /// The unprivileged id git runs as (when emberd is root).
    uid: Option<u32>,
    deadline: Instant,
    timeout: Duration,
    repo: &'a str,
}

impl Git<'_> {
    fn failed(&self, step: &'static str, status: &ExitStatus, err: &str) -> GitError {
        GitError::Failed {
            step,
            repo: self.repo.to_string(),
            status: status.to_string(),
            detail: one_line(err),
        }
    }

    /// git with `args`, unprivileged, in a cleared environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        let home: OsString = self.home.clone().into_os_string();
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", &home)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", home_config(&self.home))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", PROTOCOLS)
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for setting in [
            "core.hooksPath=/dev/null",
            "core.fsmonitor=false",
            "protocol.file.allow=always",
            "safe.directory=*",
            "submodule.recurse=false",
            "transfer.fsckObjects=true",
            "credential.helper=",
        ] {
            c.arg("-c").arg(setting);
        }
        c.args(args);
        let uid = self.uid;
        if let Some(id) = uid {
            // std drops supplementary groups before setuid when it can;
            // the pre_exec below checks it did.
            c.uid(id).gid(id);
        }
        // SAFETY: the closure runs in the forked child before exec and
        // only makes system calls that are async-signal-safe (prctl,
        // getgroups, geteuid, getegid); it allocates nothing (an
        // io::Error from a raw errno does not allocate).
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Runs after the uid change, so it stays set.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(id) = uid {
                    if libc::geteuid() != id
                        || libc::getegid() != id
                        || libc::getgroups(0, std::ptr::null_mut()) != 0
                    {
                        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                    }
                }
                Ok(())
            });
        }
        c
    }

    /// Run one step; `out` reads its stdout (and may stop early: git
    /// then dies of the closed pipe). Past the deadline, git's whole
    /// group is killed.
    fn run<T: Send>(
        &self,
        step: &'static str,
        args: &[&str],
        out: impl FnOnce(&mut std::process::ChildStdout) -> T + Send,
    ) -> Result<Ran<T>, GitError> {
        let mut child = self
            .command(args)
            .spawn()
            .map_err(|e| GitError::Host(format!("starting git {step}: {e} (is git installed?)")))?;
        let pid = Pid::from_raw(child.id() as i32);
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GitError::Host(format!("git {step}: no pipes")));
        };
        let (timed_out, status, got, err) = std::thread::scope(|s| {
            let err = s.spawn(move || bounded(&mut stderr, STDERR_KEEP));
            let got = s.spawn(move || out(&mut stdout));
            let timed_out = wait_exit(pid, self.deadline);
            // Not reaped yet, so the group id is still git's: whatever git
            // started (upload-pack, a helper) goes with it.
            let _ = killpg(pid, Signal::SIGKILL);
            let status = child.wait();
            (timed_out, status, got.join(), err.join())
        });
        if timed_out {
            return Err(GitError::Timeout {
                step,
                repo: self.repo.to_string(),
                timeout: self.timeout,
            });
        }
        let status = status.map_err(|e| GitError::Host(format!("waiting for git {step}: {e}")))?;
        let (Ok(out), Ok(err)) = (got, err) else {
            return Err(GitError::Host(format!("git {step}: a reader panicked")));
        };
        Ok(Ran { status, out, err })
    }
}

/// The global config file in git's `HOME`.
fn home_config(home: &Path) -> PathBuf {
    home.join("gitconfig")
}

/// Wait until `pid` has exited (without reaping it) or `deadline`;
/// whether the deadline came first.
fn wait_exit(pid: Pid, deadline: Instant) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            _ => return false,
        }
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Read `r` to its end, keeping the first `keep` bytes (as text).
fn bounded(r: &mut impl Read, keep: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// git's private directory: `<parent>/ember-git-N/tmp`, a tmpfs of a
/// bounded size owned by git's id when root (named `tmp` so a restart's
/// recovery, which unmounts a bundle's `tmp`, removes a crashed run's);
/// removed on drop.
struct Scratch {
    root: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn create(parent: &Path, uid: Option<u32>, bytes: u64) -> std::io::Result<Scratch> {
        let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let root = parent.join(format!("ember-git-{}-{seq}", std::process::id()));
        // Searchable, not listable: git reaches `tmp` and nothing else.
        std::fs::DirBuilder::new().mode(0o711).create(&root)?;
        let mut scratch = Scratch {
            root,
            mounted: false,
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(scratch.home())?;
        if let Some(id) = uid {
            let opts = format!("size={bytes},mode=0700,uid={id},gid={id}");
            nix::mount::mount(
                Some("tmpfs"),
                &scratch.home(),
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some(opts.as_str()),
            )?;
            scratch.mounted = true;
        }
        Ok(scratch)
    }

    /// git's `HOME` and working directory; the clone is `repo.git` in it.
    fn home(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.home(), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), "removing git's clone directory: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(repo: &str, reference: Option<&str>, subdir: Option<&str>) -> GitCode {
        GitCode {
            repo: repo.into(),
            reference: reference.map(Into::into),
            subdir: subdir.map(Into::into),
        }
    }

    #[test]
    fn refs_that_look_like_options_or_ranges_are_refused() {
        for r in [
            "-c",
            "--upload-pack=touch /tmp/x",
            "--output=/etc/x",
            "",
            "a..b",
            "v1 ",
            "HEAD^{tree}",
            "main:secret",
            "/abs",
            "x/",
            "@{-1}",
            "a\nb",
        ] {
            let e = GitRequest::check(&code("/r", Some(r), None)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{r:?}");
        }
        for r in ["v1", "main", "feature/x-1", "release_2.0", "a+b", "HEAD"] {
            GitRequest::check(&code("/r", Some(r), None)).unwrap();
        }
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            GitRequest::check(&code("/r", Some(sha), None))
                .unwrap()
                .reference
                .as_deref(),
            Some(sha)
        );
    }

    #[test]
    fn subdirs_stay_inside_the_repository() {
        for s in [
            "..", "a/../b", "../x", "/etc", "a//b", "./a", "a/./b", "a\\b", "a\0",
        ] {
            let e = GitRequest::check(&code("/r", None, Some(s))).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{s:?}");
        }
        let sub = |s| {
            GitRequest::check(&code("/r", None, Some(s)))
                .unwrap()
                .subdir
        };
        assert_eq!(sub("fn"), Some("fn".into()));
        assert_eq!(sub("fns/hello/"), Some("fns/hello".into()));
        assert_eq!(sub(""), None);
    }

    #[test]
    fn repos_are_absolute_paths_or_urls_of_plain_transports() {
        for r in [
            "-u/tmp/x",
            "--upload-pack=sh",
            "relative/path",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "host:path",
            "ssh://host/repo",
            "",
            "/a\nb",
        ] {
            let e = GitRequest::check(&code(r, None, None)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{r:?}");
        }
        for r in [
            "/srv/repo",
            "file:///srv/repo",
            "https://example.com/r.git",
            "git://example.com/r",
        ] {
            GitRequest::check(&code(r, None, None)).unwrap();
        }
    }

    /// A repository with `fn/main.py` at tag `v1`, and a change on `main`.
    fn repo(dir: &Path) -> PathBuf {
        let repo = dir.join("src");
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
                .arg(&repo)
                .args(args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        std::fs::create_dir_all(repo.join("fn")).unwrap();
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("fn/main.py"), "V = 1\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "one"]);
        git(&["tag", "v1"]);
        std::fs::write(repo.join("fn/main.py"), "V = 2\n").unwrap();
        git(&["commit", "-q", "-am", "two"]);
        repo
    }

    fn setup(dir: &Path) -> GitSetup {
        let parent = dir.join("scratch");
        std::fs::create_dir_all(&parent).unwrap();
        GitSetup {
            scratch_parent: parent,
            ids: None,
            timeout: Duration::from_secs(30),
            clone_bytes: 64 << 20,
        }
    }

    fn have_git() -> bool {
        Command::new("git").arg("--version").output().is_ok()
    }

    #[test]
    fn fetches_a_tag_or_a_branch_and_leaves_nothing_behind() {
        if !have_git() {
            eprintln!("skipped: no git");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Readable by git's unprivileged id when the test runs as root.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let src = repo(dir.path());
        let setup = setup(dir.path());
        for (reference, want) in [(Some("v1"), "V = 1\n"), (None, "V = 2\n")] {
            let dest = dir
                .path()
                .join(format!("dest-{}", reference.unwrap_or("head")));
            std::fs::create_dir(&dest).unwrap();
            let req =
                GitRequest::check(&code(src.to_str().unwrap(), reference, Some("fn"))).unwrap();
            let origin = fetch(&req, &setup, &dest, UnpackLimits::default()).unwrap();
            assert_eq!(std::fs::read_to_string(dest.join("main.py")).unwrap(), want);
            assert_eq!(origin.commit.len(), 40);
            assert_eq!(origin.reference, reference.unwrap_or("HEAD"));
            assert_eq!(origin.subdir.as_deref(), Some("fn"));
        }
        let left: Vec<_> = std::fs::read_dir(&setup.scratch_parent).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");

        let dest = dir.path().join("dest-bad");
        std::fs::create_dir(&dest).unwrap();
        let req = GitRequest::check(&code(src.to_str().unwrap(), Some("nope"), None)).unwrap();
        let e = fetch(&req, &setup, &dest, UnpackLimits::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::GitRefNotFound, "{e}");
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let req = GitRequest::check(&code(src.to_str().unwrap(), None, Some("nothere"))).unwrap();
        let e = fetch(&req, &setup, &dest, UnpackLimits::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::GitSubdirNotFound, "{e}");
        let missing = dir.path().join("missing");
        let req = GitRequest::check(&code(missing.to_str().unwrap(), None, None)).unwrap();
        let e = fetch(&req, &setup, &dest, UnpackLimits::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::GitUnreachable, "{e}");
        let left: Vec<_> = std::fs::read_dir(&setup.scratch_parent).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
