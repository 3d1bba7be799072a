//! ember: the CLI for emberd. See `ember --help`.

use clap::Parser;
use ember_shim::cli::{run, Cli};

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
            ember_shim::cli::terminal::shown(&text, ember_shim::cli::terminal::Stream::Stderr)
        );
        std::process::exit(1);
    }
}
