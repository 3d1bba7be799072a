//! Device nodes a runtime puts in a sandbox's `/dev` that no function
//! needs: gVisor adds `/dev/fuse` and `/dev/net/tun` (world-writable)
//! whatever the bundle's `/dev` holds. The agent, root in the sandbox and
//! owner of its `/dev`, removes them before anything else runs, so no
//! function can open them.

/// Removed if present.
const EXTRA: &[&str] = &["/dev/fuse", "/dev/net/tun"];

/// Remove [`EXTRA`] (and `/dev/net` once empty). Failures are reported on
/// stderr, not fatal: the worker filters refuse `mount`, so FUSE stays
/// unusable, and without a network interface a TUN device reaches nothing.
pub fn remove_extra() {
    for dev in EXTRA {
        match std::fs::remove_file(dev) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("ember-agent: removing {dev}: {e}"),
        }
    }
    let _ = std::fs::remove_dir("/dev/net");
}
