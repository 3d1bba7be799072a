//! `containerd-shim-ember-v1`: started by containerd for runtime type
//! `io.containerd.ember.v1`; see the `ember_containerd_shim` library and
//! docs/containerd.md.

fn main() {
    if std::env::args().any(|a| a == "--version" || a == "-version") {
        println!("containerd-shim-ember-v1 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    containerd_shim::run::<ember_containerd_shim::shim::EmberShim>("io.containerd.ember.v1", None);
}
