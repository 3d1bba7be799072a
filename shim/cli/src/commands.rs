//! The `ember` command line: a thin client of emberd's API. Parsing and
//! dispatch live here; each command in a module of its own (`deploy`,
//! `invoke`, `logs`, `functions`, `pools`, `sessions`, `init`, `demo`),
//! every reply decoded into `ember_api`'s types (`reply`).

use crate::flags::DeployFlags;
use crate::logs::parse_age;
use crate::{demo, deploy, functions, init, invoke, logs, pools, sessions, terminal};

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
    /// Deploy (or update) a function from a directory, or from a git
    /// repository (`ember deploy NAME --git REPO [--ref REF] [--subdir DIR]`).
    ///
    /// On a terminal, a spinner on stderr shows the phase (packing,
    /// uploading, emberd installing requirements.txt) and the time elapsed.
    ///
    /// With --git, emberd fetches the code itself (this command runs no
    /// git): it clones the repository as an unprivileged id, so the
    /// repository must be readable by any user; it takes the tree of the ref's commit (or of --subdir in it),
    /// and records the commit in the function (`ember function NAME`).
    /// Settings then come from the flags only (no ember.json is read).
    /// Only on emberd's Unix socket.
    Deploy {
        /// Function directory (with ember.json, if any); with --git, the
        /// function name.
        #[arg(value_name = "DIR|NAME")]
        dir: PathBuf,
        /// Function name (default: the manifest's name, else the directory name).
        #[arg(long, conflicts_with = "git")]
        name: Option<String>,
        /// Deploy from this git repository: a local path (sent as its
        /// canonical absolute path) or a file://, git://, http:// or
        /// https:// URL (sent as is; no credentials).
        #[arg(long, value_name = "REPO")]
        git: Option<String>,
        /// With --git: a branch, a tag or a full commit sha (default: the
        /// repository's HEAD).
        #[arg(long = "ref", value_name = "REF", requires = "git")]
        reference: Option<String>,
        /// With --git: the function's directory in the repository
        /// (default: its root).
        #[arg(long, value_name = "DIR", requires = "git")]
        subdir: Option<String>,
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
        /// Call this open session of NAME (see `ember session open`): the
        /// handler runs in the session's own sandbox, its state kept
        /// from the session's earlier calls.
        #[arg(long)]
        session: Option<String>,
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
    /// Pause a function: emberd refuses its invocations (409
    /// function_paused) until it is resumed; those running finish, its
    /// warm bound sandboxes are released. Kept across emberd restarts and
    /// redeploys.
    Pause { name: String },
    /// Resume a paused function: its invocations run again.
    Resume { name: String },
    /// Open, list, show and close sessions: a sandbox bound to one
    /// function and one session alone, keeping the handler's state
    /// (globals, files under /tmp) between the session's calls.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
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
            git: Some(repo),
            reference,
            subdir,
            settings,
            ..
        } => {
            let git = deploy::GitArgs {
                repo,
                reference,
                subdir,
            };
            deploy::deploy_git(&client, dir, git, settings).await
        }
        Command::Deploy {
            dir,
            name,
            settings,
            ..
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
            session,
        } => invoke::invoke(&client, &name, data, verbose, retries, session.as_deref()).await,
        Command::Functions { json } => functions::functions(&client, json).await,
        Command::Logs {
            name,
            follow,
            since,
            limit,
        } => logs::logs(&client, &name, follow, since, limit).await,
        Command::Function { name } => functions::function(&client, &name).await,
        Command::Delete { name } => functions::delete(&client, &name).await,
        Command::Pause { name } => functions::pause(&client, &name, true).await,
        Command::Resume { name } => functions::pause(&client, &name, false).await,
        Command::Session { command } => session(&client, command).await,
        Command::Pool { json } => pools::pools(&client, json).await,
        Command::Sandboxes { json } => pools::sandboxes(&client, json).await,
        Command::Demo {
            invocations,
            emberd,
        } => demo::run(invocations, emberd).await,
    }
}

/// `ember session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Open a session of a function: prints its id alone on stdout, what
    /// it is on stderr. Call it with `ember invoke NAME --session ID`.
    Open {
        name: String,
        /// Print emberd's reply (the session) as JSON on stdout instead.
        #[arg(long)]
        json: bool,
    },
    /// List open sessions: function, invocations, idle for, memory,
    /// expires in.
    List {
        /// Only this function's sessions.
        #[arg(long)]
        function: Option<String>,
        /// Also the most recently ended sessions (at most 100), with why
        /// they ended.
        #[arg(long)]
        ended: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one session, open or ended.
    #[command(alias = "get")]
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// End a session and destroy its sandbox (a running call is stopped).
    Close { id: String },
}

async fn session(client: &Client, command: SessionCommand) -> Result<()> {
    match command {
        SessionCommand::Open { name, json } => sessions::open(client, &name, json).await,
        SessionCommand::List {
            function,
            ended,
            json,
        } => sessions::list(client, function.as_deref(), ended, json).await,
        SessionCommand::Show { id, json } => sessions::show(client, &id, json).await,
        SessionCommand::Close { id } => sessions::close(client, &id).await,
    }
}
