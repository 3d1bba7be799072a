//! The `ember` command line: a thin client of emberd's API.

use crate::{demo, init, pack, phases, terminal};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ember_api::client::{Answer, Client};
use ember_api::DeployOptions;
use ember_term as progress;
use hyper::Method;
use std::path::PathBuf;
use terminal::{shown, Stream};

#[derive(Debug, Parser)]
#[command(
    name = "ember",
    version,
    about = "Deploy and invoke functions on emberd (warm sandboxes, hot-swapped code)",
    after_help = "The API behind every command is documented in docs/api.md."
)]
pub struct Cli {
    /// emberd's Unix socket.
    #[arg(
        long,
        global = true,
        env = "EMBER_SOCKET",
        default_value = "/run/ember/ember.sock"
    )]
    pub socket: PathBuf,

    /// Print what functions wrote (output, errors, tracebacks) as it is,
    /// control characters included, even to a terminal (by default they
    /// are escaped there, so a function cannot drive your terminal).
    #[arg(long, global = true)]
    pub raw: bool,

    #[command(subcommand)]
    pub command: Command,
}

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
}

impl DeployFlags {
    /// Flags win over the manifest.
    fn over(self, m: DeployOptions) -> DeployOptions {
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
        }
    }
}

/// Deploy settings as a query string (values are checked by the daemon;
/// anything outside a safe set of characters is percent-encoded).
fn query_string(o: &DeployOptions) -> String {
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a function: NAME/main.py (python3) or NAME/index.js (node)
    /// with handler(event, context), and NAME/ember.json.
    Init {
        /// Directory to create; its last component is the function name.
        name: PathBuf,
        /// Language runtime: python3 or node.
        #[arg(long, default_value = "python3")]
        runtime: String,
    },
    /// Run a function directory once in a throwaway sandbox, without
    /// deploying it; prints its JSON result on stdout, its output and
    /// timings on stderr.
    ///
    /// On a terminal, a spinner on stderr says what emberd is doing
    /// meanwhile (installing requirements.txt, running).
    Test {
        /// Function directory (with ember.json, if any).
        dir: PathBuf,
        /// Event as JSON text; `@FILE` reads a file, `-` reads stdin. Default `{}`.
        #[arg(long, short = 'd')]
        data: Option<String>,
        #[command(flatten)]
        settings: DeployFlags,
    },
    /// Deploy (or update) a function from a directory.
    ///
    /// On a terminal, a spinner on stderr shows the phase (packing,
    /// uploading, emberd installing requirements.txt) and the time elapsed.
    Deploy {
        /// Function directory (with ember.json, if any).
        dir: PathBuf,
        /// Function name (default: the manifest's name, else the directory name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: DeployFlags,
    },
    /// Invoke a function; prints its JSON result on stdout.
    Invoke {
        name: String,
        /// Event as JSON text; `@FILE` reads a file, `-` reads stdin. Default `{}`.
        #[arg(long, short = 'd')]
        data: Option<String>,
        /// Also print start kind, sandbox, timings and the function's stdout/stderr on stderr.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Show a function's invocations: outcome, start, sandbox, timings,
    /// and each one's stdout and stderr, oldest first.
    Logs {
        name: String,
        /// Keep watching for new invocations (Ctrl-C stops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only invocations started within this long (`30s`, `10m`, `2h`,
        /// `1d`).
        #[arg(long, value_parser = parse_age)]
        since: Option<u64>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List deployed functions.
    Functions {
        #[arg(long)]
        json: bool,
    },
    /// Show one function.
    Function { name: String },
    /// Delete a function.
    Delete { name: String },
    /// Show warm pools.
    Pool {
        #[arg(long)]
        json: bool,
    },
    /// Show sandboxes (idle and busy).
    Sandboxes {
        #[arg(long)]
        json: bool,
    },
    /// End the invocation running in a sandbox at once (see `ember sandboxes`).
    Kill {
        /// Sandbox id.
        id: String,
    },
    /// Start a private emberd, deploy a sample function, invoke it, show timings, stop.
    ///
    /// On a terminal, a bar on stderr shows the python3 pool warming up.
    Demo {
        /// Invocations to run.
        #[arg(long, default_value_t = 50)]
        invocations: usize,
        /// emberd binary (default: next to ember).
        #[arg(long)]
        emberd: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    terminal::set_raw(cli.raw);
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Init { name, runtime } => init::run(&name, &runtime),
        Command::Deploy {
            dir,
            name,
            settings,
        } => deploy(&client, dir, name, settings).await,
        Command::Test {
            dir,
            data,
            settings,
        } => test(&client, dir, data, settings).await,
        Command::Kill { id } => {
            let a = ok(client
                .request(Method::POST, &format!("/v1/sandboxes/{id}/kill"), None, "")
                .await?)?;
            let k = &a.json()["killed"];
            eprintln!(
                "killed invocation {} of {} in sandbox {id}",
                s(&k["invocation"]),
                s(&k["function"])
            );
            Ok(())
        }
        Command::Invoke {
            name,
            data,
            verbose,
        } => invoke(&client, &name, data, verbose).await,
        Command::Functions { json } => functions(&client, json).await,
        Command::Logs {
            name,
            follow,
            since,
            limit,
        } => logs(&client, &name, follow, since, limit).await,
        Command::Function { name } => {
            let a = ok(client.get(&format!("/v1/functions/{name}")).await?)?;
            println!("{}", serde_json::to_string_pretty(&a.json())?);
            Ok(())
        }
        Command::Delete { name } => {
            ok(client
                .request(Method::DELETE, &format!("/v1/functions/{name}"), None, "")
                .await?)?;
            eprintln!("deleted {name}");
            Ok(())
        }
        Command::Pool { json } => pools(&client, json).await,
        Command::Sandboxes { json } => sandboxes(&client, json).await,
        Command::Demo {
            invocations,
            emberd,
        } => demo::run(invocations, emberd).await,
    }
}

/// Turn an error answer into an error carrying the daemon's message.
fn ok(a: Answer) -> Result<Answer> {
    if a.status.is_success() {
        Ok(a)
    } else {
        let v = a.json();
        let code = v["error"]["code"].as_str().unwrap_or("error");
        bail!("{} ({code}, HTTP {})", a.error_message(), a.status.as_u16())
    }
}

async fn deploy(
    client: &Client,
    dir: PathBuf,
    name: Option<String>,
    flags: DeployFlags,
) -> Result<()> {
    let manifest = init::Manifest::load(&dir)?;
    let name = name
        .or_else(|| manifest.as_ref().and_then(|m| m.name.clone()))
        .or_else(|| {
            std::fs::canonicalize(&dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .context("cannot tell the function name: pass --name")?;
    let options = flags.over(manifest.map(|m| m.options).unwrap_or_default());
    let deps = phases::installs_python_deps(&dir, options.runtime.as_deref());
    // Cleared on drop too: an error below is printed on a clean line.
    let spinner = progress::spinner(phases::packing(&dir));
    let archive = pack::tar_gz(&dir)?;
    let query = query_string(&options);
    let path = if query.is_empty() {
        format!("/v1/functions/{name}")
    } else {
        format!("/v1/functions/{name}?{query}")
    };
    spinner.set_message(phases::deploying(archive.len(), deps));
    let answer = client
        .request(Method::PUT, &path, Some("application/gzip"), archive)
        .await;
    spinner.finish_and_clear();
    let v = ok(answer?)?.json();
    eprintln!(
        "deployed {} ({}, {}, profile {}, code sha256:{})",
        v["name"].as_str().unwrap_or(&name),
        v["runtime"].as_str().unwrap_or("?"),
        v["handler"].as_str().unwrap_or("?"),
        v["profile"].as_str().unwrap_or("?"),
        &v["digest"].as_str().unwrap_or("?")[..12.min(v["digest"].as_str().unwrap_or("?").len())]
    );
    Ok(())
}

/// `ember test`: the daemon reads the directory itself (same host), runs it
/// in a sandbox of its own and forgets it.
async fn test(
    client: &Client,
    dir: PathBuf,
    data: Option<String>,
    flags: DeployFlags,
) -> Result<()> {
    let manifest = init::Manifest::load(&dir)?;
    let abs = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
    let name = manifest
        .as_ref()
        .and_then(|m| m.name.clone())
        .or_else(|| abs.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let options = flags.over(manifest.map(|m| m.options).unwrap_or_default());
    let event: serde_json::Value =
        serde_json::from_slice(&read_data(data)?).context("--data is not valid JSON")?;
    let mut body = serde_json::to_value(&options)?;
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
        map.insert("name".into(), serde_json::json!(name));
        // Uploaded, as a deploy is: emberd copies only what any user could
        // read from a host path, and takes none over HTTP.
        use base64::Engine;
        let archive = base64::engine::general_purpose::STANDARD.encode(pack::tar_gz(&abs)?);
        map.insert("code".into(), serde_json::json!({ "archive": archive }));
        map.insert("event".into(), event);
    }
    let body = serde_json::to_vec(&body)?;
    let deps = phases::installs_python_deps(&abs, options.runtime.as_deref());
    let spinner = progress::spinner(phases::testing(&dir, deps));
    let answer = client
        .request(Method::POST, "/v1/test", Some("application/json"), body)
        .await;
    spinner.finish_and_clear();
    show_invocation(answer?, true)
}

/// `30s`, `10m`, `2h`, `1d` (or plain seconds) as milliseconds.
/// An age `--since` cannot read.
#[derive(Debug, thiserror::Error)]
#[error("invalid age {0:?}: use e.g. 30s, 10m, 2h, 1d")]
struct BadAge(String);

fn parse_age(text: &str) -> std::result::Result<u64, BadAge> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num.parse().map_err(|_| BadAge(text.to_string()))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(BadAge(text.to_string())),
    };
    Ok(n * secs * 1000)
}

async fn logs(
    client: &Client,
    name: &str,
    follow: bool,
    since_ms: Option<u64>,
    limit: usize,
) -> Result<()> {
    let mut since = since_ms.map(|age| now_ms() - age as i64);
    let mut seen = std::collections::HashSet::new();
    loop {
        let path = match since {
            Some(s) => format!("/v1/functions/{name}/logs?limit={limit}&since={s}"),
            None => format!("/v1/functions/{name}/logs?limit={limit}"),
        };
        let v = ok(client.get(&path).await?)?.json();
        for inv in v["invocations"].as_array().cloned().unwrap_or_default() {
            let id = s(&inv["id"]);
            // A running invocation is shown once it has finished.
            if inv["outcome"] == "running" || !seen.insert(id.clone()) {
                continue;
            }
            let total = inv["timings_us"]["total"].as_u64().unwrap_or(0) as f64 / 1000.0;
            let head = format!(
                "=== {id} {} {} start {} sandbox {} total {total:.2} ms{}",
                fmt_ms(inv["started_at"].as_i64().unwrap_or(0)),
                s(&inv["outcome"]),
                s(&inv["start"]),
                s(&inv["sandbox"]),
                inv["error"]
                    .as_str()
                    .map(|e| format!(" | {e}"))
                    .unwrap_or_default()
            );
            println!("{}", shown(&head, Stream::Stdout));
            for stream in ["stdout", "stderr"] {
                if let Some(text) = inv[stream].as_str().filter(|t| !t.is_empty()) {
                    for line in text.lines() {
                        println!("{stream}: {}", shown(line, Stream::Stdout));
                    }
                }
            }
        }
        if !follow {
            return Ok(());
        }
        // Later polls only need what started in the last minute or since
        // the first shown (a long invocation finishes late).
        since = Some(now_ms() - 60_000);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Unix milliseconds as `HH:MM:SS.mmm` UTC.
fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        ms.rem_euclid(1000)
    )
}

fn read_data(data: Option<String>) -> Result<Vec<u8>> {
    match data.as_deref() {
        None => Ok(b"{}".to_vec()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading event from stdin")?;
            Ok(buf)
        }
        Some(s) if s.starts_with('@') => {
            std::fs::read(&s[1..]).with_context(|| format!("reading event file {}", &s[1..]))
        }
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

fn print_function_output(inv: &serde_json::Value) {
    for stream in ["stdout", "stderr"] {
        if let Some(text) = inv[stream].as_str().filter(|t| !t.is_empty()) {
            eprintln!(
                "--- function {stream}{} ---",
                if inv[format!("{stream}_truncated")] == true {
                    " (truncated)"
                } else {
                    ""
                }
            );
            eprint!("{}", shown(text, Stream::Stderr));
            if !text.ends_with('\n') {
                eprintln!();
            }
        }
    }
}

fn print_timings(inv: &serde_json::Value) {
    let t = &inv["timings_us"];
    let ms = |k: &str| t[k].as_u64().unwrap_or(0) as f64 / 1000.0;
    eprintln!(
        "{} start in {} | total {:.2} ms = queue {:.2} + create {:.2} + thaw {:.2} + inject {:.2} + run {:.2} + cleanup {:.2}",
        inv["start"].as_str().unwrap_or("?"),
        inv["sandbox"].as_str().unwrap_or("?"),
        ms("total"),
        ms("queue"),
        ms("create"),
        ms("thaw"),
        ms("inject"),
        ms("run"),
        ms("cleanup"),
    );
}

async fn invoke(client: &Client, name: &str, data: Option<String>, verbose: bool) -> Result<()> {
    let body = read_data(data)?;
    let a = client
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            Some("application/json"),
            body,
        )
        .await?;
    show_invocation(a, verbose)
}

/// Print an invocation's answer: the result on stdout; with `verbose` (or
/// on failure) its output, and timings, on stderr.
fn show_invocation(a: Answer, verbose: bool) -> Result<()> {
    let v = a.json();
    if a.status.is_success() {
        if verbose {
            print_function_output(&v);
            print_timings(&v);
        }
        println!("{}", serde_json::to_string(&v["result"])?);
        return Ok(());
    }
    let inv = &v["invocation"];
    if !inv.is_null() {
        print_function_output(inv);
        if verbose {
            print_timings(inv);
        }
    }
    if let Some(tb) = v["error"]["traceback"].as_str().filter(|t| !t.is_empty()) {
        eprint!("{}", shown(tb, Stream::Stderr));
        if !tb.ends_with('\n') {
            eprintln!();
        }
    }
    ok(a).map(|_| ())
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

async fn functions(client: &Client, json: bool) -> Result<()> {
    let v = ok(client.get("/v1/functions").await?)?.json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v["functions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            vec![
                s(&f["name"]),
                s(&f["runtime"]),
                s(&f["mode"]),
                s(&f["handler"]),
                format!("{}ms", s(&f["timeout_ms"])),
                s(&f["digest"]).chars().take(12).collect(),
            ]
        })
        .collect();
    table(
        &["NAME", "RUNTIME", "MODE", "HANDLER", "TIMEOUT", "CODE"],
        rows,
    );
    Ok(())
}

async fn pools(client: &Client, json: bool) -> Result<()> {
    let v = ok(client.get("/v1/pools").await?)?.json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v["pools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            [
                "runtime",
                "backend",
                "target",
                "min_warm",
                "max_warm",
                "max",
                "idle",
                "bound",
                "busy",
                "creating",
                "warm_starts_total",
                "hot_starts_total",
                "cold_starts_total",
            ]
            .iter()
            .map(|k| s(&p[*k]))
            .collect()
        })
        .collect();
    table(
        &[
            "RUNTIME", "BACKEND", "TARGET", "MIN", "MAX_WARM", "MAX", "IDLE", "BOUND", "BUSY",
            "CREATING", "WARM", "HOT", "COLD",
        ],
        rows,
    );
    Ok(())
}

async fn sandboxes(client: &Client, json: bool) -> Result<()> {
    let v = ok(client.get("/v1/sandboxes").await?)?.json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v["sandboxes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            [
                "id",
                "runtime",
                "state",
                "pid",
                "invocations",
                "bound_to",
                "function",
            ]
            .iter()
            .map(|k| s(&b[*k]))
            .collect()
        })
        .collect();
    table(
        &[
            "ID",
            "RUNTIME",
            "STATE",
            "PID",
            "INVOCATIONS",
            "BOUND TO",
            "FUNCTION",
        ],
        rows,
    );
    Ok(())
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
