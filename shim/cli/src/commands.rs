//! The `ember` command line: a thin client of emberd's API. Parsing and
//! dispatch live here; each command in a module of its own (`deploy`,
//! `invoke`, `logs`, `functions`, `pools`, `init`, `demo`), every reply
//! decoded into `ember_api`'s types (`reply`).

use crate::flags::DeployFlags;
use crate::logs::parse_age;
use crate::{demo, deploy, functions, init, invoke, logs, pools, terminal};

use anyhow::Result;
use clap::{Parser, Subcommand};
use ember_api::client::Client;
use std::path::PathBuf;

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
        /// On 429 overloaded (emberd's queue is full), wait the answer's
        /// Retry-After seconds and try again, up to this many times (saying
        /// so on stderr); then fail with the error. 0: never retry.
        #[arg(long, default_value_t = 3)]
        retries: u32,
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
        } => deploy::deploy(&client, dir, name, settings).await,
        Command::Test {
            dir,
            data,
            settings,
        } => deploy::test(&client, dir, data, settings).await,
        Command::Kill { id } => pools::kill(&client, &id).await,
        Command::Invoke {
            name,
            data,
            verbose,
            retries,
        } => invoke::invoke(&client, &name, data, verbose, retries).await,
        Command::Functions { json } => functions::functions(&client, json).await,
        Command::Logs {
            name,
            follow,
            since,
            limit,
        } => logs::logs(&client, &name, follow, since, limit).await,
        Command::Function { name } => functions::function(&client, &name).await,
        Command::Delete { name } => functions::delete(&client, &name).await,
        Command::Pool { json } => pools::pools(&client, json).await,
        Command::Sandboxes { json } => pools::sandboxes(&client, json).await,
        Command::Demo {
            invocations,
            emberd,
        } => demo::run(invocations, emberd).await,
    }
}
