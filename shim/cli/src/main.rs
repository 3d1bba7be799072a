//! ember, the command-line client of emberd: see `ember --help`.
//!
//! Owns the commands (deploy, invoke, test, logs, lists, pools, kill,
//! pause, resume, sessions, init, demo) and how their answers look on a terminal. Speaks to emberd
//! only through `ember-api` (types and socket client); links nothing of
//! the daemon.

use clap::Parser;
mod commands;
mod demo;
mod deploy;
mod flags;
mod functions;
mod init;
mod invoke;
mod logs;
mod pack;
mod phases;
mod pools;
mod reply;
mod sessions;
mod table;
mod terminal;

use commands::{run, Cli};

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        // The message may quote a function's exception text.
        let text = format!("{e:#}");
        eprintln!(
            "error: {}",
            terminal::shown(&text, terminal::Stream::Stderr)
        );
        std::process::exit(1);
    }
}
