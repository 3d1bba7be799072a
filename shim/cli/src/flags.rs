//! Deploy settings on the command line (`ember deploy`, `ember test`), over
//! the manifest's, and as the query string of a deploy.

use ember_api::DeployOptions;

/// Deploy settings; each defaults to the manifest's (`ember.json`), else
/// the daemon's default.
#[derive(Debug, Default, clap::Args)]
pub struct DeployFlags {
    /// Language runtime: python3 (default) or node.
    #[arg(long)]
    runtime: Option<String>,
    /// Handler: module.function for python3 (default main.handler),
    /// file.function for node (default index.handler).
    #[arg(long)]
    handler: Option<String>,
    /// fork (a fresh worker per invocation; python3's default) or
    /// specialized (a sandbox keeps the function loaded; node's only mode).
    #[arg(long)]
    mode: Option<String>,
    /// Timeout in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Sandbox profile: default, or strict for untrusted code.
    #[arg(long)]
    profile: Option<String>,
    /// Backend of its sandboxes (runc, crun, runsc; one emberd runs).
    #[arg(long)]
    backend: Option<String>,
    /// Fork mode: fork workers from a zygote that imported the handler
    /// once, after the first invocation (default true; false: every
    /// invocation imports it afresh).
    #[arg(long)]
    zygote: Option<bool>,
    /// Memory for the function's worker, MiB (default 256).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Processes and threads at once, worker included (default 64).
    #[arg(long)]
    pids: Option<u64>,
    /// CPU weight, cgroup v1 shares (default 1024).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// Cap for each of stdout and stderr, bytes.
    #[arg(long)]
    max_output_bytes: Option<u64>,
    /// Largest event accepted, bytes.
    #[arg(long)]
    max_event_bytes: Option<u64>,
    /// Most invocations of the function running at once (default: only
    /// the pool's limit).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// With --max-concurrency: most invocations waiting for a slot; more
    /// are refused at once with 429 overloaded (default 4 × the
    /// concurrency; 0: none wait).
    #[arg(long)]
    max_queue: Option<u32>,
    /// Sessions: end one unused this many seconds (default: emberd's
    /// --session-idle-s, 300).
    #[arg(long)]
    session_idle_s: Option<u64>,
    /// Sessions: end one this many seconds after it opened, used or not
    /// (default: emberd's --session-lifetime-s, 3600).
    #[arg(long)]
    session_lifetime_s: Option<u64>,
    /// Most sessions of the function open at once; more are refused with
    /// 429 session_limit (default: only emberd's --max-sessions).
    #[arg(long)]
    max_sessions: Option<u32>,
}

impl DeployFlags {
    /// Flags win over the manifest.
    pub fn over(self, m: DeployOptions) -> DeployOptions {
        DeployOptions {
            runtime: self.runtime.or(m.runtime),
            handler: self.handler.or(m.handler),
            timeout_ms: self.timeout_ms.or(m.timeout_ms),
            profile: self.profile.or(m.profile),
            backend: self.backend.or(m.backend),
            mode: self.mode.or(m.mode),
            zygote: self.zygote.or(m.zygote),
            memory_mb: self.memory_mb.or(m.memory_mb),
            pids: self.pids.or(m.pids),
            cpu_shares: self.cpu_shares.or(m.cpu_shares),
            max_output_bytes: self.max_output_bytes.or(m.max_output_bytes),
            max_event_bytes: self.max_event_bytes.or(m.max_event_bytes),
            max_concurrency: self.max_concurrency.or(m.max_concurrency),
            max_queue: self.max_queue.or(m.max_queue),
            session_idle_s: self.session_idle_s.or(m.session_idle_s),
            session_lifetime_s: self.session_lifetime_s.or(m.session_lifetime_s),
            max_sessions: self.max_sessions.or(m.max_sessions),
        }
    }
}

/// Deploy settings as a query string (values are checked by the daemon;
/// anything outside a safe set of characters is percent-encoded).
pub fn query_string(o: &DeployOptions) -> String {
    let v = serde_json::to_value(o).unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let enc: String = text
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            parts.push(format!("{k}={enc}"));
        }
    }
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        flags: DeployFlags,
    }

    #[test]
    fn session_flags_win_over_the_manifest_and_reach_the_query() {
        let args = Args::parse_from(["ember", "--session-idle-s", "60", "--max-sessions", "4"]);
        let manifest = DeployOptions {
            session_idle_s: Some(600),
            session_lifetime_s: Some(7200),
            ..Default::default()
        };
        let o = args.flags.over(manifest);
        assert_eq!(o.session_idle_s, Some(60));
        assert_eq!(o.session_lifetime_s, Some(7200));
        assert_eq!(o.max_sessions, Some(4));
        let q = query_string(&o);
        for part in [
            "session_idle_s=60",
            "session_lifetime_s=7200",
            "max_sessions=4",
        ] {
            assert!(q.split('&').any(|p| p == part), "{q}");
        }
    }
}
