//! The `strand` command line.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strand::config::BrokerConfig;

/// The allocator. The tail cache turns its whole budget (gigabytes) over in large buffers, often
/// freed on another shard than the one that allocated them. glibc's malloc gave much of that
/// memory back to the kernel and faulted it in again; jemalloc reuses it (BENCHMARKS.md,
/// session 6: steady-state produce CPU per GiB about -15%, page faults about -60%).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`, a C string): one background thread hands memory freed by
/// the tail cache back to the kernel after jemalloc's decay time (10 s) even while the broker is
/// idle, so resident memory follows the cache down as well as up. `_RJEM_MALLOC_CONF` in the
/// environment overrides it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"background_thread:true,max_background_threads:1\0"[0];

#[derive(Parser)]
#[command(name = "strand", version, about = "A Kafka-compatible broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Load generation and measurement (kafka-*-perf-test compatible).
    Perf(strand::perf::PerfArgs),
    /// Check every partition log of a data directory offline (run it on a stopped broker):
    /// batch framing, CRC32C, offsets, indexes. Exit code 0 clean, 3 repairable damage only
    /// (what a crash leaves; start-up repairs it), 2 corruption, 1 error.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Data directory of the broker.
    #[arg(long)]
    data_dir: PathBuf,
}

fn verify(a: VerifyArgs) -> anyhow::Result<u8> {
    if !a.data_dir.is_dir() {
        anyhow::bail!("{} is not a directory", a.data_dir.display());
    }
    let report = strand::storage::verify::verify_data_dir(&a.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.data_dir.display()))?;
    print!("{}", report.render(&a.data_dir));
    Ok(report.exit_code())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Data directory (created if missing).
    #[arg(long, default_value = "strand-data")]
    data_dir: PathBuf,
    /// Number of shards (one pinned core each); default: one per CPU this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs to pin shards to, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Memory for log data (tail cache, writes in flight), split among shards, e.g. 4G;
    /// default: half of physical memory, at most 2 GiB per CPU.
    #[arg(long)]
    memory: Option<String>,
    /// A Kafka-named setting, e.g. --set log.segment.bytes=1073741824 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// A properties file of Kafka-named settings (key=value lines).
    #[arg(long = "config", value_name = "FILE")]
    config_file: Option<PathBuf>,
}

fn build_config(a: ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut c = BrokerConfig::default();
    if let Some(f) = &a.config_file {
        c.load_file(f)?;
    }
    c.listen = a
        .listen
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("invalid --listen {:?}: {e}; expected HOST:PORT", a.listen))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--listen {:?} resolves to no address", a.listen))?;
    c.data_dir = a.data_dir;
    for s in &a.sets {
        c.set_pair(s)?;
    }
    if let Some(n) = a.shards {
        if n == 0 {
            anyhow::bail!("--shards must be at least 1");
        }
        c.shards = n;
    }
    if let Some(m) = &a.memory {
        c.memory_bytes = strand::config::parse_size("--memory", m, 16 << 20)?;
    }
    c.cpus = a.cpus;
    Ok(c)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAND_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Command::Verify(args) = cli.command {
        return match verify(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        Command::Serve(args) => build_config(args).and_then(strand::server::run),
        Command::Perf(args) => strand::perf::run(args),
        Command::Verify(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
