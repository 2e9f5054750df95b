//! The `sqlite2pg` binary: parse the command line, set up logging, run, and turn the outcome into
//! an exit code. Errors are printed with their whole cause chain and a hint.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use sqlite2pg::cli::{run, Cli};
use sqlite2pg::config::LogFormat;

/// mimalloc instead of glibc malloc: the diff's and the copy's reader threads allocate rows that
/// other threads free, which glibc serves with a contended arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    init_logging(
        cli.global.log_format.unwrap_or_default(),
        cli.global.log_level(),
    );
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", describe(&e));
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The error, each distinct cause on its own line, then the hint.
fn describe(e: &sqlite2pg::Error) -> String {
    let mut out = format!("error: {e}");
    let mut last = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !last.contains(&text) {
            out.push_str(&format!("\n  caused by: {text}"));
        }
        last = text;
        cause = c.source();
    }
    if let Some(hint) = e.hint() {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}
