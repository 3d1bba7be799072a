//! Installing ember on a Kubernetes node, without Kubernetes: the node
//! installer (`scripts/install-node`) against temp prefixes and temp
//! containerd configs (never the machine's), the manifests in
//! `deploy/kubernetes/` against the installer and the image, and the image
//! (`scripts/build-image`) imported into a private containerd and run as
//! the DaemonSet says: its command, privileges and host mounts (the
//! state and run directories moved into a temp dir), serving a deployed
//! function through its socket.

use ember_integration::containerd::{Containerd, Launch};
use ember_integration::kube::{
    assert_run_dir_left_empty, build_image, daemonset, host_mounts, manifest, of_kind, repo,
    strings, test_host_mounts, yaml_documents,
};
use ember_integration::{agent_path, bin, bin_dir, direct_runtime_ready, text};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's release (every crate has the workspace's version).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the installer installs into `<prefix>/bin`.
const NODE_BINARIES: &[&str] = &["ember-runtime", "containerd-shim-ember-v1", "ember-agent"];

/// The CRI plugin's runtime table in a version 2 containerd config.
const CRI_RUNTIMES: [&str; 4] = [
    "plugins",
    "io.containerd.grpc.v1.cri",
    "containerd",
    "runtimes",
];

/// Skip (or, when integration is required, fail) unless the installer's
/// inputs are built: the debug `ember-runtime` and shim, the static agent.
fn node_binaries_built(test: &str) -> bool {
    let mut missing = Vec::new();
    for b in ["ember-runtime", "containerd-shim-ember-v1"] {
        if !bin(b).is_file() {
            missing.push(format!(
                "{} (cargo build --workspace --bins)",
                bin(b).display()
            ));
        }
    }
    if !agent_path().is_file() {
        missing.push(format!("{} (scripts/build-agent)", agent_path().display()));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: needs {}", missing.join(", "));
    assert!(
        std::env::var("EMBER_REQUIRE_INTEGRATION").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIPPED {msg}");
    false
}

#[test]
fn the_yaml_reader_reads_what_the_manifests_use() {
    let docs = yaml_documents(
        "# c\na: 1\nb:\n  - name: x # note\n    v: \"q # not a comment\"\n  - plain\nc: [\"--x\", 'y', z]\nd:\n  e: true\n---\nf: \"true\"\n",
    );
    assert_eq!(
        docs,
        vec![
            serde_json::json!({
                "a": 1,
                "b": [{"name": "x", "v": "q # not a comment"}, "plain"],
                "c": ["--x", "y", "z"],
                "d": {"e": true},
            }),
            serde_json::json!({"f": "true"}),
        ]
    );
}

/// The image the DaemonSet runs is the one `scripts/build-image` names by
/// default; its command is in the image's bin directory; it has what
/// emberd needs of the node, each at its node path.
#[test]
fn the_daemonset_matches_the_image_and_the_node_install() {
    let (c, pod) = daemonset();
    assert_eq!(c["image"], format!("ember.local/emberd:{VERSION}"));
    let script = std::fs::read_to_string(repo().join("scripts/build-image")).unwrap();
    assert!(
        script.contains("tag=\"ember.local/emberd:$version\""),
        "scripts/build-image's default name is ember.local/emberd:<version>"
    );
    assert_eq!(c["imagePullPolicy"], "Never", "imported, not pulled");
    let command = strings(&c["command"]);
    assert_eq!(command, ["/opt/ember/bin/emberd"]);
    assert!(script.contains("bin_in_image=opt/ember/bin"));
    let args = strings(&c["args"]);
    let flag = |f: &str| {
        let i = args
            .iter()
            .position(|a| a == f)
            .unwrap_or_else(|| panic!("{f} in {args:?}"));
        args[i + 1].clone()
    };
    // Where ember-runtime (EMBER_SOCKET's default) registers containers.
    assert_eq!(flag("--socket"), "/run/ember/ember.sock");
    assert_eq!(flag("--state-dir"), "/var/lib/ember");
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(
        pod["hostPID"], true,
        "adopted containers are found by node pid"
    );
    let probe = strings(&c["readinessProbe"]["exec"]["command"]);
    assert_eq!(probe[0], "/opt/ember/bin/ember");

    let mounts = host_mounts(&c, &pod);
    for (at, host, _) in &mounts {
        assert_eq!(at, host, "the node's {host} at the same path in the pod");
    }
    let mounted = |p: &str| {
        mounts
            .iter()
            .find(|(at, _, _)| at == p)
            .unwrap_or_else(|| panic!("the DaemonSet mounts the node's {p}"))
            .2
    };
    // Socket, run dirs and ember-runtime's agent sockets (/run/ember/a);
    // state; cgroups: read-write.
    for p in ["/run/ember", "/var/lib/ember", "/sys/fs/cgroup"] {
        assert!(!mounted(p), "{p} is read-write");
    }
    // The node's runtimes and interpreters, and its accounts: read-only.
    for p in ["/usr", "/etc"] {
        assert!(mounted(p), "{p} is read-only");
    }
    assert!(flag("--socket").starts_with("/run/ember/"));

    // emberd runs where the RuntimeClasses send pods: on installed nodes.
    let classes = manifest("runtimeclass.yaml");
    for rc in of_kind(&classes, "RuntimeClass") {
        assert_eq!(
            rc["scheduling"]["nodeSelector"], pod["nodeSelector"],
            "{rc}"
        );
    }
    let installer = std::fs::read_to_string(repo().join("scripts/install-node")).unwrap();
    assert!(
        installer.contains("dev.ember/node=true"),
        "the installer says to label the node"
    );
}

// ---- the installer ------------------------------------------------------

struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Install {
        Install {
            dir: tempfile::Builder::new()
                .prefix("ember-it-install-")
                .tempdir()
                .unwrap(),
        }
    }

    fn prefix(&self) -> PathBuf {
        self.dir.path().join("prefix")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("containerd/config.toml")
    }

    /// `scripts/install-node` with this prefix and config, from the debug
    /// builds and the static agent.
    fn run(&self, extra: &[&str]) -> Output {
        Command::new(repo().join("scripts/install-node"))
            .arg("--prefix")
            .arg(self.prefix())
            .arg("--containerd-config")
            .arg(self.config())
            .arg("--from")
            .arg(bin_dir())
            .arg("--agent")
            .arg(agent_path())
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/install-node")
    }

    fn ok(&self, extra: &[&str]) -> Output {
        let out = self.run(extra);
        assert!(
            out.status.success(),
            "install-node {extra:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    fn read_config(&self) -> Vec<u8> {
        std::fs::read(self.config()).expect("containerd config")
    }

    fn write_config(&self, bytes: &[u8]) {
        std::fs::create_dir_all(self.config().parent().unwrap()).unwrap();
        std::fs::write(self.config(), bytes).unwrap();
    }
}

fn toml_value(bytes: &[u8]) -> Value {
    let t: toml::Table = toml::from_str(std::str::from_utf8(bytes).unwrap())
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{}", text(bytes)));
    serde_json::to_value(t).unwrap()
}

fn runtimes(config: &Value) -> &Value {
    CRI_RUNTIMES.iter().fold(config, |v, k| &v[*k])
}

/// A node's config with settings and runtimes of its own.
const NODE_CONFIG: &str = r#"# the node's containerd
version = 2
oom_score = -999

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
"#;

#[test]
fn install_node_installs_once_whatever_the_runs_and_uninstall_restores_the_config() {
    if !node_binaries_built(
        "install_node_installs_once_whatever_the_runs_and_uninstall_restores_the_config",
    ) {
        return;
    }
    let t = Install::new();
    t.write_config(NODE_CONFIG.as_bytes());
    let first = t.ok(&[]);
    let after_first = t.read_config();
    let second = t.ok(&[]);
    assert_eq!(
        text(&t.read_config()),
        text(&after_first),
        "a second run changes nothing"
    );
    assert_eq!(text(&first.stdout), text(&second.stdout));

    // It prints what it installed, with versions; each is the build's.
    let bindir = t.prefix().join("bin");
    let listed: Vec<String> = text(&first.stdout).lines().map(String::from).collect();
    let expected: Vec<String> = NODE_BINARIES
        .iter()
        .map(|b| format!("{} {VERSION}", bindir.join(b).display()))
        .collect();
    assert_eq!(listed, expected);
    for b in NODE_BINARIES {
        let out = Command::new(bindir.join(b))
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(text(&out.stdout).trim(), format!("{b} {VERSION}"));
        let source = if *b == "ember-agent" {
            agent_path()
        } else {
            bin(b)
        };
        assert!(
            std::fs::read(bindir.join(b)).unwrap() == std::fs::read(&source).unwrap(),
            "{b} is {}",
            source.display()
        );
    }
    assert!(
        text(&first.stderr).contains("restart containerd"),
        "{}",
        text(&first.stderr)
    );

    // The config: the node's own settings and runtimes kept, ember's added
    // in the marked block.
    let config_text = text(&after_first);
    assert!(
        config_text.starts_with(NODE_CONFIG),
        "the node's config is left as it was before the block"
    );
    let block = &config_text[NODE_CONFIG.len()..];
    assert!(
        block.starts_with("# BEGIN ember (managed by scripts/install-node)\n"),
        "{block}"
    );
    assert!(
        !block.contains("runtimes.runc]"),
        "the node's runc entry is its own: {block}"
    );
    assert!(block.ends_with("# END ember\n"), "{block}");
    let config = toml_value(&after_first);
    assert_eq!(config["oom_score"], -999);
    let rt = runtimes(&config);
    assert_eq!(rt["kata"]["runtime_type"], "io.containerd.kata.v2");
    assert_eq!(rt["runc"]["options"]["SystemdCgroup"], false);
    let prefix = t.prefix();
    let conf_dir = prefix.join("etc/ember");
    let path = |p: PathBuf| Value::String(p.to_string_lossy().into_owned());
    for (name, shim_config) in [
        ("ember", "shim-runc.toml"),
        ("ember-gvisor", "shim-runsc.toml"),
    ] {
        let r = &rt[name];
        assert_eq!(r["runtime_type"], "io.containerd.ember.v1", "{name}");
        assert_eq!(
            r["runtime_path"],
            path(bindir.join("containerd-shim-ember-v1"))
        );
        assert_eq!(r["pod_annotations"], serde_json::json!(["dev.ember.*"]));
        assert_eq!(
            r["container_annotations"],
            serde_json::json!(["dev.ember.*"])
        );
        assert_eq!(r["options"]["TypeUrl"], "io.containerd.ember.v1.options");
        assert_eq!(r["options"]["ConfigPath"], path(conf_dir.join(shim_config)));
    }
    let r = &rt["ember-runc"];
    assert_eq!(r["runtime_type"], "io.containerd.runc.v2");
    assert_eq!(
        r["options"]["BinaryName"],
        path(bindir.join("ember-runtime"))
    );
    assert_eq!(r["pod_annotations"], serde_json::json!(["dev.ember.*"]));

    // The shim configs, in the shim's keys.
    let shim = |f: &str| toml_value(&std::fs::read(conf_dir.join(f)).unwrap());
    let runc = shim("shim-runc.toml");
    assert_eq!(runc["runtime"], "runc");
    assert_eq!(runc["ember_runtime"], path(bindir.join("ember-runtime")));
    let runsc = shim("shim-runsc.toml");
    assert_eq!(runsc["runtime"], "runsc");
    assert_eq!(
        runsc["runtime_args"],
        serde_json::json!(["--platform=ptrace", "--network=none"])
    );
    assert_eq!(runsc["ember_runtime"], path(bindir.join("ember-runtime")));

    // Every RuntimeClass's handler is one of the installed runtimes.
    for rc in of_kind(&manifest("runtimeclass.yaml"), "RuntimeClass") {
        let handler = rc["handler"].as_str().unwrap();
        assert!(
            rt[handler].is_object(),
            "RuntimeClass handler {handler} is installed"
        );
    }

    // Uninstall: the config byte for byte as it was, nothing of ember left.
    t.ok(&["--uninstall"]);
    assert_eq!(text(&t.read_config()), NODE_CONFIG);
    for b in NODE_BINARIES {
        assert!(!bindir.join(b).exists(), "{b} removed");
    }
    assert!(!conf_dir.exists(), "shim configs removed");
}

#[test]
fn install_node_handles_missing_headerless_and_unterminated_configs() {
    if !node_binaries_built("install_node_handles_missing_headerless_and_unterminated_configs") {
        return;
    }
    // No config: one is made (version 2), and removed again.
    let t = Install::new();
    t.ok(&[]);
    let made = t.read_config();
    assert!(text(&made).starts_with("version = 2 "), "{}", text(&made));
    assert!(runtimes(&toml_value(&made))["ember"].is_object());
    // containerd's default runtime comes with the block (a config naming
    // runtimes drops containerd's built-in runc entry), and goes with it.
    assert_eq!(
        runtimes(&toml_value(&made))["runc"]["runtime_type"],
        "io.containerd.runc.v2"
    );
    t.ok(&["--uninstall"]);
    assert!(!t.config().exists(), "the config the install made is gone");

    // Comments only, no version: the header goes on top, and comes off.
    for original in [&b"# nothing yet\n"[..], b"", b"# no newline at the end"] {
        let t = Install::new();
        t.write_config(original);
        t.ok(&[]);
        let c = t.read_config();
        assert_eq!(toml_value(&c)["version"], 2, "{}", text(&c));
        t.ok(&[]);
        assert_eq!(t.read_config(), c, "idempotent");
        t.ok(&["--uninstall"]);
        assert_eq!(text(&t.read_config()), text(original));
    }

    // A config whose last line has no newline gets one before the block;
    // --uninstall takes it away again.
    let t = Install::new();
    let original = NODE_CONFIG.trim_end();
    t.write_config(original.as_bytes());
    t.ok(&[]);
    let c = t.read_config();
    assert!(runtimes(&toml_value(&c))["kata"].is_object());
    t.ok(&[]);
    assert_eq!(t.read_config(), c, "idempotent");
    t.ok(&["--uninstall"]);
    assert_eq!(text(&t.read_config()), original);

    // --dry-run changes nothing.
    let t = Install::new();
    t.write_config(NODE_CONFIG.as_bytes());
    let out = t.ok(&["--dry-run"]);
    assert!(text(&out.stderr).contains("would"), "{}", text(&out.stderr));
    assert_eq!(text(&t.read_config()), NODE_CONFIG);
    assert!(!t.prefix().exists());
}

#[test]
fn install_node_refuses_configs_it_would_break_and_other_versions_without_upgrade() {
    if !node_binaries_built(
        "install_node_refuses_configs_it_would_break_and_other_versions_without_upgrade",
    ) {
        return;
    }
    let refused = |t: &Install, extra: &[&str], says: &str| {
        let before = std::fs::read(t.config()).ok();
        let out = t.run(extra);
        assert!(!out.status.success(), "refused");
        let err = text(&out.stderr);
        assert!(err.contains(says), "says {says:?}: {err}");
        assert_eq!(std::fs::read(t.config()).ok(), before, "config untouched");
    };
    // One of ember's runtimes already there, by hand (TOML allows a table
    // once: containerd would not start).
    let t = Install::new();
    let hand = format!(
        "{NODE_CONFIG}[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ember]\n  runtime_type = \"io.containerd.runc.v2\"\n"
    );
    t.write_config(hand.as_bytes());
    refused(
        &t,
        &[],
        &format!("line {}", NODE_CONFIG.lines().count() + 1),
    );
    assert!(
        !t.prefix().join("bin/ember-runtime").exists(),
        "nothing installed"
    );
    // A version 1 config (no header, settings): its plugin names differ.
    let t = Install::new();
    t.write_config(b"[plugins.cri]\n  sandbox_image = \"pause:3\"\n");
    refused(&t, &[], "version 1");
    let t = Install::new();
    t.write_config(b"version = 3\n");
    refused(&t, &[], "version 3");

    // Installed binaries of another version: only --upgrade replaces them.
    let t = Install::new();
    t.ok(&[]);
    let runtime = t.prefix().join("bin/ember-runtime");
    std::fs::write(&runtime, "#!/bin/sh\necho ember-runtime 0.0.1\n").unwrap();
    refused(
        &t,
        &[],
        &format!("is 0.0.1, this install is {VERSION}: pass --upgrade"),
    );
    // A half-written block is the operator's to fix.
    let c = t.read_config();
    let cut = text(&c).replace("# END ember\n", "");
    std::fs::write(t.config(), &cut).unwrap();
    refused(&t, &["--upgrade"], "half of ember's block");
    std::fs::write(t.config(), &c).unwrap();
    t.ok(&["--upgrade"]);
    let out = Command::new(&runtime).arg("--version").output().unwrap();
    assert_eq!(text(&out.stdout).trim(), format!("ember-runtime {VERSION}"));
    assert_eq!(t.read_config(), c);
}

/// The installed block in a real containerd 1.6 with its CRI plugin on:
/// containerd starts and the plugin loads it (`ctr plugins ls`: ok).
#[test]
fn containerd_loads_the_config_install_node_writes() {
    let test = "containerd_loads_the_config_install_node_writes";
    if !node_binaries_built(test)
        || !direct_runtime_ready(
            test,
            &[
                ("/usr/bin/containerd", "containerd"),
                ("/usr/bin/ctr", "containerd"),
            ],
            &[],
        )
    {
        return;
    }
    // Debian's own config (its CNI directories; no runtime of its own:
    // the installer adds containerd's default runc entry, without which
    // the CRI plugin would not load once the config names runtimes).
    let t = Install::new();
    let cni = t.dir.path().join("net.d");
    let debian = format!(
        "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    \
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      \
         conf_dir = {cni:?}\n"
    );
    t.write_config(debian.as_bytes());
    t.ok(&[]);
    assert!(runtimes(&toml_value(&t.read_config()))["runc"].is_object());
    // The config but its header, under the private containerd's own
    // settings (root, state, sockets in its temp dir).
    let installed = text(&t.read_config());
    let block = installed
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap();
    let plugins = move |_: &Path| block.clone();
    let ctrd = Containerd::launch(&Launch {
        prefix: "ember-it-install-ctrd-",
        cri: true,
        plugins: &plugins,
        ..Launch::default()
    });
    let out = ctrd.ctr(&["plugins", "ls"]);
    let list = text(&out.stdout);
    let cri = list
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no cri plugin:\n{list}\n{}", ctrd.log()));
    assert!(cri.trim_end().ends_with("ok"), "{cri}\n{}", ctrd.log());
    // The CRI plugin's own view of its config (it logs it at start): each
    // runtime as the installer meant it.
    let log = ctrd.log();
    let bindir = t.prefix().join("bin");
    let conf_dir = t.prefix().join("etc/ember");
    for seen in [
        format!(
            "ember:{{Type:io.containerd.ember.v1 Path:{} Engine: PodAnnotations:[dev.ember.*] \
             ContainerAnnotations:[dev.ember.*] Root: Options:map[ConfigPath:{} \
             TypeUrl:io.containerd.ember.v1.options]",
            bindir.join("containerd-shim-ember-v1").display(),
            conf_dir.join("shim-runc.toml").display()
        ),
        format!(
            "ember-gvisor:{{Type:io.containerd.ember.v1 Path:{} Engine: \
             PodAnnotations:[dev.ember.*] ContainerAnnotations:[dev.ember.*] Root: \
             Options:map[ConfigPath:{} TypeUrl:io.containerd.ember.v1.options]",
            bindir.join("containerd-shim-ember-v1").display(),
            conf_dir.join("shim-runsc.toml").display()
        ),
        format!(
            "ember-runc:{{Type:io.containerd.runc.v2 Path: Engine: PodAnnotations:[dev.ember.*] \
             ContainerAnnotations:[dev.ember.*] Root: Options:map[BinaryName:{}]",
            bindir.join("ember-runtime").display()
        ),
        "DefaultRuntimeName:runc".to_string(),
        "runc:{Type:io.containerd.runc.v2 ".to_string(),
    ] {
        assert!(
            log.contains(&seen),
            "containerd's CRI config has {seen}\n{log}"
        );
    }
}

// ---- the image ----------------------------------------------------------

/// The entries of a tar archive: path -> (type, mode, link target, data).
type Entries = std::collections::BTreeMap<String, (tar::EntryType, u32, String, Vec<u8>)>;

fn tar_entries(data: &[u8]) -> Entries {
    let mut out = Entries::new();
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (kind, mode) = (e.header().entry_type(), e.header().mode().unwrap());
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.insert(path, (kind, mode, link, bytes));
    }
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn blob<'a>(archive: &'a Entries, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = &archive[&format!("blobs/sha256/{hex}")].3;
    assert_eq!(sha256_hex(data), hex, "blob {digest} has its digest");
    data
}

fn json(data: &[u8]) -> Value {
    serde_json::from_slice(data).expect("JSON")
}

/// `scripts/build-image` from the debug builds: the archive is the image
/// the DaemonSet names (command = entrypoint, binaries and mount points in
/// its layer); a private containerd imports it; run with the DaemonSet's
/// privileges and host mounts (its run and state directories moved into a
/// temp dir), its emberd serves: a function deploys and answers through
/// its socket, the readiness probe passes, and on SIGTERM it stops,
/// leaving nothing.
#[test]
fn the_image_imports_into_containerd_and_runs_as_the_daemonset_says() {
    let test = "the_image_imports_into_containerd_and_runs_as_the_daemonset_says";
    if !direct_runtime_ready(
        test,
        &[
            ("/usr/bin/containerd", "containerd"),
            ("/usr/bin/ctr", "containerd"),
            ("/usr/bin/containerd-shim-runc-v2", "containerd"),
            ("/usr/sbin/runc", "runc"),
            ("/usr/bin/python3", "python3"),
        ],
        &["emberd", "ember"],
    ) || !node_binaries_built(test)
    {
        return;
    }
    let (c, pod) = daemonset();
    let image = c["image"].as_str().unwrap().to_string();
    let dir = tempfile::Builder::new()
        .prefix("ember-it-img-")
        .tempdir()
        .unwrap();
    let archive_path = dir.path().join("emberd.tar");
    // From the debug builds (a minute at most), or as shipped.
    let built = build_image(&archive_path);
    assert!(
        built.release || built.took < Duration::from_secs(60),
        "built in {:?}",
        built.took
    );
    assert_eq!(
        built.printed,
        [archive_path.to_str().unwrap(), image.as_str()],
        "it prints the archive and the DaemonSet's image name"
    );

    // The archive: index -> manifest -> config and layer.
    let archive = tar_entries(&std::fs::read(&archive_path).unwrap());
    let index = json(&archive["index.json"].3);
    let m = &index["manifests"][0];
    assert_eq!(m["annotations"]["io.containerd.image.name"], image.as_str());
    let manifest = json(blob(&archive, m["digest"].as_str().unwrap()));
    let config = json(blob(
        &archive,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(
        config["config"]["Entrypoint"], c["command"],
        "the DaemonSet's command is the image's entrypoint"
    );
    assert_eq!(config["config"]["Cmd"], c["args"]);
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        VERSION
    );
    let gz = blob(&archive, manifest["layers"][0]["digest"].as_str().unwrap());
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut layer_tar)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&layer_tar))
    );
    let layer = tar_entries(&layer_tar);
    for b in ["emberd", "ember", "ember-agent"] {
        let (kind, mode, _, _) = &layer[&format!("opt/ember/bin/{b}")];
        assert!(
            kind.is_file() && mode & 0o111 != 0,
            "{b} is an executable file"
        );
    }
    // The entrypoint and the probe's binary are in it.
    for p in [&c["command"][0], &c["readinessProbe"]["exec"]["command"][0]] {
        assert!(
            layer.contains_key(p.as_str().unwrap().trim_start_matches('/')),
            "{p}"
        );
    }
    // A mount point for each host mount; the node's /usr reached as on a
    // merged-/usr node.
    for (at, _, _) in host_mounts(&c, &pod) {
        let (kind, _, _, _) = &layer[at.trim_start_matches('/')];
        assert!(kind.is_dir(), "{at} is a directory in the image");
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        let (kind, _, target, _) = &layer[l];
        assert!(
            kind.is_symlink() && *target == format!("usr/{l}"),
            "/{l} -> usr/{l}"
        );
    }
    // The agent is the static one, as built.
    assert_eq!(
        sha256_hex(&layer["opt/ember/bin/ember-agent"].3),
        sha256_hex(&{
            let stripped = dir.path().join("agent");
            let st = Command::new("strip")
                .args(["--strip-debug", "-o"])
                .arg(&stripped)
                .arg(agent_path())
                .status();
            if st.map(|s| s.success()).unwrap_or(false) {
                std::fs::read(&stripped).unwrap()
            } else {
                std::fs::read(agent_path()).unwrap()
            }
        })
    );

    // containerd imports it.
    let ctrd = Containerd::start();
    let out = ctrd.ctr(&["images", "import", archive_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "ctr images import: {}",
        text(&out.stderr)
    );
    let listed = text(&ctrd.ctr(&["images", "ls", "--quiet"]).stdout);
    assert!(listed.lines().any(|l| l == image), "{listed}");

    // Run as the DaemonSet says, its run and state directories in the temp
    // dir (the node's own emberd, if any, is not touched).
    let run = dir.path().join("run");
    let state = dir.path().join("state");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    if c["securityContext"]["privileged"] == true {
        args.push("--privileged".into());
    }
    if pod["hostPID"] == true {
        // The node's pid namespace (this process's; /proc/1 may be
        // unreadable in a VM's sandbox).
        args.push(format!("--with-ns=pid:/proc/{}/ns/pid", std::process::id()));
    }
    for (at, source, ro) in test_host_mounts(&c, &pod, &run, &state) {
        args.push("--mount".into());
        args.push(format!(
            "type=bind,src={},dst={at},options=rbind:{}",
            source.display(),
            if ro { "ro" } else { "rw" }
        ));
    }
    args.push(image.clone());
    args.push("emberd-pod".into());
    args.extend(strings(&c["command"]));
    args.extend(strings(&c["args"]));
    let out = ctrd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "ctr run: {}{}",
        text(&out.stderr),
        ctrd.log()
    );

    let socket = run.join("ember.sock");
    let ember = |a: &[&str]| {
        Command::new(bin("ember"))
            .arg("--socket")
            .arg(&socket)
            .args(a)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let t = Instant::now();
    while !ember(&["pool"]).status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "emberd in the image did not answer; {}",
            ctrd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe = strings(&c["readinessProbe"]["exec"]["command"]);
    let mut exec: Vec<&str> = vec!["tasks", "exec", "--exec-id", "probe", "emberd-pod"];
    exec.extend(probe.iter().map(String::as_str));
    let out = ctrd.ctr(&exec);
    assert!(
        out.status.success(),
        "readiness probe: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let fdir = dir.path().join("hello");
    std::fs::create_dir_all(&fdir).unwrap();
    std::fs::write(
        fdir.join("main.py"),
        "def handler(event, context):\n    return {'hello': event['name'], 'fn': context.function_name}\n",
    )
    .unwrap();
    let out = ember(&["deploy", fdir.to_str().unwrap(), "--name", "hello"]);
    assert!(out.status.success(), "deploy: {}", text(&out.stderr));
    for name in ["Ada", "Bob"] {
        let out = ember(&[
            "invoke",
            "hello",
            "--data",
            &format!("{{\"name\":\"{name}\"}}"),
        ]);
        assert!(out.status.success(), "invoke: {}", text(&out.stderr));
        assert_eq!(
            json(&out.stdout),
            serde_json::json!({"hello": name, "fn": "hello"})
        );
    }

    // SIGTERM (what the kubelet sends): emberd drains, removes its
    // sandboxes and its run directory, and exits.
    let out = ctrd.ctr(&["tasks", "kill", "--signal", "SIGTERM", "emberd-pod"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = Instant::now();
    loop {
        let tasks = text(&ctrd.ctr(&["tasks", "list"]).stdout);
        if !tasks.contains("RUNNING") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "emberd still running: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_run_dir_left_empty(&run);
}

// ---- versions ------------------------------------------------------------

/// emberd refuses an agent of another release and says both versions: on
/// a node the agent is the node's install and emberd the image's. A fake
/// agent (a shell script: the sandbox binds the host's /usr) answers
/// `Ready` as an agent 0.0.1 would; the sandbox is not used, and emberd's
/// log names both versions.
#[test]
fn emberd_refuses_an_agent_of_another_release_naming_both_versions() {
    let test = "emberd_refuses_an_agent_of_another_release_naming_both_versions";
    if !ember_integration::prerequisites_met(test) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ember-it-ver-")
        .tempdir()
        .unwrap();
    let ready = r#"{"type":"ready","protocol":5,"version":"0.0.1","zygote_pid":1,"runtime_version":"3.11","preload_us":1}"#;
    let len = ready.len();
    assert!(len < 256);
    let agent = dir.path().join("old-agent");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\nprintf '\\000\\000\\000\\{len:03o}%s' '{ready}'\nexec sleep 30\n"),
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let socket = dir.path().join("ember.sock");
    let log_path = dir.path().join("emberd.log");
    let mut emberd = Command::new(bin("emberd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--agent")
        .arg(&agent)
        .args([
            "--backend",
            "runc",
            "--runtimes",
            "python3",
            "--pool-size",
            "1",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let expected =
        format!("ember-agent 0.0.1 (protocol 5) does not match emberd {VERSION} (protocol ");
    let t = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains(&expected) || t.elapsed() > Duration::from_secs(30) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // No sandbox of that agent joins the pool.
    let pool = Command::new(bin("ember"))
        .arg("--socket")
        .arg(&socket)
        .arg("sandboxes")
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(emberd.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t = Instant::now();
    while emberd.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = emberd.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log.contains(&expected),
        "emberd's log says {expected:?}:\n{log}"
    );
    assert!(
        !text(&pool.stdout).contains("idle"),
        "no sandbox of the old agent: {}",
        text(&pool.stdout)
    );
}
