//! `strand perf`: the load generator and its measuring tools.
//!
//! - `perf produce` takes kafka-producer-perf-test's flags and prints its lines;
//! - `perf consume` takes kafka-consumer-perf-test's flags and prints its rows;
//! - `perf sink` is a Kafka-speaking endpoint that acknowledges produce requests at once and
//!   discards the data, to measure the generator's own ceiling.
//!
//! The generator uses its own pipelined client ([`client`]) rather than librdkafka: batches are
//! built once, straight into request frames, with no per-message callbacks or queues; several
//! connections each keep many requests in flight; and it exercises our protocol code paths
//! from the outside. Everything here runs on plain threads and std sockets, independent of the
//! broker's glommio runtime.

pub mod client;
pub mod consume;
pub mod produce;
pub mod sink;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The `strand perf` command line.
#[derive(clap::Args, Debug)]
pub struct PerfArgs {
    #[command(subcommand)]
    pub command: PerfCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum PerfCommand {
    /// Produce load; flags and output of kafka-producer-perf-test.
    Produce(produce::ProduceArgs),
    /// Consume and measure; flags and output of kafka-consumer-perf-test.
    Consume(consume::ConsumeArgs),
    /// A Kafka endpoint that acknowledges produce requests at once and discards the data.
    Sink(sink::SinkArgs),
}

/// Runs a `strand perf` subcommand.
pub fn run(args: PerfArgs) -> Result<()> {
    match args.command {
        PerfCommand::Produce(a) => produce::run(a),
        PerfCommand::Consume(a) => consume::run(a),
        PerfCommand::Sink(a) => sink::run(a),
    }
}

/// Reads a Java-style properties file: `key=value` (or `key: value`, `key value`) lines,
/// `#` and `!` comments.
pub fn read_properties(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(at) = line.find(['=', ':', ' ', '\t']) else {
            bail!("{}:{}: expected key=value, got {line:?}", path.display(), n + 1);
        };
        out.insert(line[..at].trim().to_string(), line[at + 1..].trim().to_string());
    }
    Ok(out)
}

/// Parses `k=v` command-line properties into `into`.
pub fn parse_props(pairs: &[String], into: &mut BTreeMap<String, String>) -> Result<()> {
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("invalid property {p:?}: expected key=value");
        };
        into.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(())
}

/// Formats a Unix time in milliseconds as Java's `yyyy-MM-dd HH:mm:ss:SSS` in local time.
pub fn format_java_date(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000) as libc::time_t;
    let ms = unix_ms.rem_euclid(1000);
    // SAFETY: tm is a C struct of integers (and a tm_zone pointer, null when zeroed).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r only writes into `tm`.
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("{unix_ms}");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}:{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms
    )
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A metric for `--print-metrics`.
pub enum MetricValue {
    Float(f64),
    Text(String),
}

/// Prints metrics the way Kafka's tools do (ToolsUtils.printMetrics): sorted by
/// `group:name:{tags}`, padded, doubles with three decimals.
pub fn print_metrics(metrics: &[(String, MetricValue)]) {
    if metrics.is_empty() {
        return;
    }
    let mut sorted: Vec<&(String, MetricValue)> = metrics.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let width = sorted.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    println!("\n{:<width$}   Value", "Metric Name");
    for (name, value) in sorted {
        match value {
            MetricValue::Float(v) => println!("{name:<width$} : {v:.3}"),
            MetricValue::Text(s) => println!("{name:<width$} : {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date_shape() {
        let s = format_java_date(1_700_000_000_123);
        assert_eq!(s.len(), "yyyy-MM-dd HH:mm:ss:SSS".len());
        assert!(s.ends_with(":123"));
    }

    #[test]
    fn props() {
        let mut m = BTreeMap::new();
        parse_props(&["acks=all".into(), "bootstrap.servers=a:1,b:2".into()], &mut m).unwrap();
        assert_eq!(m["acks"], "all");
        assert_eq!(m["bootstrap.servers"], "a:1,b:2");
        assert!(parse_props(&["nokey".into()], &mut m).is_err());
    }
}
