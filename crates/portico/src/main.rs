//! The `portico` binary: one executable for gateway nodes (and, later, the control plane and
//! client commands). Thin: it parses the command line, sets up logging and hands over.

mod gateway_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc: the proxy allocates and frees small buffers on every request; glibc's malloc
/// spent 6-8 % of the CPU per request there (bench/callgrind.sh, bench/profile.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portico: a gateway platform.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or check a gateway node.
    #[command(subcommand)]
    Gateway(GatewayCommand),
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Run a gateway from a config file (TOML, or JSON when the name ends in .json).
    /// Reloads on SIGHUP and when the file changes; drains on SIGTERM.
    Run(RunArgs),
    /// Validate a config file and print every error with its path.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file.
    #[arg(long, short, env = "PORTICO_CONFIG")]
    config: PathBuf,
    /// Worker threads (overrides `node.workers`; default one per CPU).
    #[arg(long, env = "PORTICO_WORKERS")]
    workers: Option<usize>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The config file.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Gateway(GatewayCommand::Check(args)) => gateway_cmd::check(&args.config),
        Command::Gateway(GatewayCommand::Run(args)) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(gateway_cmd::run(&args.config, args.workers)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
