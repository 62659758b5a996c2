//! `strand perf produce`: kafka-producer-perf-test's interface on a pipelined native client.
//!
//! Owns the load schedule, batch building and latency accounting of the producer benchmark.
//!
//! How the load is generated:
//! - One shared [`Plan`] hands out record indices. Each writer thread (one per connection)
//!   claims a whole request's worth at once with a compare-and-swap: one batch per partition
//!   it serves, each batch up to `batch.size` bytes; partitioning is sticky per batch, rotating
//!   over the writer's partitions. No locks are taken on this path.
//! - With `--throughput`, record `i` is *intended* to be sent at `start + i / throughput`. A
//!   batch closes when full or `linger.ms` after its first record's intended time, and every
//!   record's latency is measured from its intended time, so a stalled broker shows up as
//!   latency instead of silently lowering the offered load (no coordinated omission). When the
//!   generator falls behind, due records are packed into full batches.
//! - Unthrottled, a request is built as soon as the writer can send it; its records' latency
//!   runs from that moment (including any wait for an in-flight slot).
//! - Each connection has a writer and a reader thread. The writer registers a request in a
//!   bounded channel (`max.in.flight.requests.per.connection` deep) before writing it, the
//!   reader pairs each response with it by correlation id. Latencies go into per-reader
//!   hdrhistograms (microseconds), merged at the end; the 5-second window lines are read from
//!   per-reader atomics by the main thread.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::{ProduceRequest, ProducerId};

use super::client::{self, BatchSpec, Codec, Conn, ProduceFrame, ProducerIdentity, TopicInfo};
use super::{print_metrics, MetricValue};

/// kafka-producer-perf-test's reporting interval.
pub const DEFAULT_REPORTING_INTERVAL_MS: u64 = 5000;
/// Kafka producer defaults (4.x).
pub const DEFAULT_BATCH_SIZE: usize = 16384;
pub const DEFAULT_LINGER_MS: u64 = 5;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 1_048_576;
pub const DEFAULT_REQUEST_TIMEOUT_MS: i32 = 30_000;
pub const DEFAULT_CLIENT_ID: &str = "perf-producer-client";
/// The idempotent producer allows at most this many requests in flight per connection.
const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;
/// Highest Produce version this tool encodes.
const MAX_PRODUCE_VERSION: i16 = 13;
/// Highest latency the histograms track (one hour, in microseconds); larger values saturate.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant figures of the latency histograms.
const HISTOGRAM_SIGFIG: u8 = 3;
/// Failed-batch messages printed before going quiet.
const MAX_ERRORS_PRINTED: u64 = 10;
/// Java's RNG seed for the random payload.
const PAYLOAD_SEED: u64 = 0;

/// Producer properties read but not used (no effect on a benchmark run with this client).
const IGNORED_PROPS: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "buffer.memory",
    "retries",
    "retry.backoff.ms",
    "delivery.timeout.ms",
    "send.buffer.bytes",
    "receive.buffer.bytes",
    "partitioner.class",
    "metadata.max.age.ms",
    "max.block.ms",
    "compression.level",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
];

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("payload").required(true).args(["record_size", "payload_file", "payload_monotonic"])))]
pub struct ProduceArgs {
    /// Topic to produce to (created if the broker auto-creates topics).
    #[arg(long)]
    pub topic: String,
    /// Number of records to produce.
    #[arg(long = "num-records")]
    pub num_records: u64,
    /// Throttle to about THROUGHPUT records/sec; -1 to disable throttling.
    #[arg(long, allow_negative_numbers = true)]
    pub throughput: f64,
    /// Record size in bytes (random A-Z payload, generated once).
    #[arg(long = "record-size")]
    pub record_size: Option<usize>,
    /// File of payloads, split by --payload-delimiter; each record picks one at random.
    #[arg(long = "payload-file")]
    pub payload_file: Option<PathBuf>,
    /// Delimiter of --payload-file (\n, \t, \r escapes understood).
    #[arg(long = "payload-delimiter", default_value = "\\n")]
    pub payload_delimiter: String,
    /// Payload is the record's index as a decimal string.
    #[arg(long = "payload-monotonic")]
    pub payload_monotonic: bool,
    /// Producer properties, e.g. bootstrap.servers=HOST:PORT acks=all.
    #[arg(long = "producer-props", num_args = 1.., value_name = "PROP-NAME=PROP-VALUE")]
    pub producer_props: Vec<String>,
    /// Producer properties file (overridden by --producer-props).
    #[arg(long = "producer.config", value_name = "CONFIG-FILE")]
    pub producer_config: Option<PathBuf>,
    /// Bootstrap servers (same as bootstrap.servers).
    #[arg(long = "bootstrap-server")]
    pub bootstrap_server: Option<String>,
    /// Records treated as warm-up: a steady-state summary of the rest is printed as well.
    #[arg(long = "warmup-records", default_value_t = 0)]
    pub warmup_records: u64,
    /// Print client metrics at the end.
    #[arg(long = "print-metrics")]
    pub print_metrics: bool,
    /// (strand) Also print the final latencies in microseconds.
    #[arg(long = "latency-us")]
    pub latency_us: bool,
    /// (strand) Connections per broker, each with its own writer and reader thread.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// (strand) Milliseconds between window lines.
    #[arg(long = "reporting-interval", default_value_t = DEFAULT_REPORTING_INTERVAL_MS)]
    pub reporting_interval_ms: u64,
}

/// The producer properties this client honours.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub servers: Vec<String>,
    pub acks: i16,
    pub batch_size: usize,
    pub linger: Duration,
    pub codec: Codec,
    pub idempotence: bool,
    pub max_in_flight: usize,
    pub client_id: String,
    pub max_request_size: usize,
    pub request_timeout_ms: i32,
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| anyhow!("invalid value {v:?} for {key}"))
}

impl ProducerSettings {
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<ProducerSettings> {
        let mut s = ProducerSettings {
            servers: Vec::new(),
            acks: -1,
            batch_size: DEFAULT_BATCH_SIZE,
            linger: Duration::from_millis(DEFAULT_LINGER_MS),
            codec: Codec::None,
            idempotence: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            client_id: DEFAULT_CLIENT_ID.to_string(),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        };
        let mut idempotence_explicit = false;
        for (k, v) in props {
            match k.as_str() {
                "bootstrap.servers" => s.servers = client::parse_servers(v),
                "acks" => {
                    s.acks = match v.as_str() {
                        "all" | "-1" => -1,
                        "0" => 0,
                        "1" => 1,
                        _ => bail!("invalid value {v:?} for acks: expected all, -1, 0 or 1"),
                    }
                }
                "batch.size" => s.batch_size = parse_num(k, v)?,
                "linger.ms" => s.linger = Duration::from_millis(parse_num(k, v)?),
                "compression.type" => s.codec = Codec::parse(v)?,
                "enable.idempotence" => {
                    s.idempotence = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => bail!("invalid value {v:?} for enable.idempotence: expected true or false"),
                    };
                    idempotence_explicit = true;
                }
                "max.in.flight.requests.per.connection" => s.max_in_flight = parse_num(k, v)?,
                "client.id" => s.client_id = v.clone(),
                "max.request.size" => s.max_request_size = parse_num(k, v)?,
                "request.timeout.ms" => s.request_timeout_ms = parse_num(k, v)?,
                k if IGNORED_PROPS.contains(&k) => {}
                _ => eprintln!("warning: producer property {k} is not used by strand perf; ignoring it"),
            }
        }
        if s.servers.is_empty() {
            bail!("bootstrap.servers is required (--producer-props bootstrap.servers=HOST:PORT, --producer.config or --bootstrap-server)");
        }
        if s.max_in_flight == 0 {
            bail!("max.in.flight.requests.per.connection must be at least 1");
        }
        if s.request_timeout_ms <= 0 {
            bail!("request.timeout.ms must be positive");
        }
        if s.idempotence && idempotence_explicit {
            if s.acks != -1 {
                bail!("enable.idempotence=true requires acks=all");
            }
            if s.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
                bail!("enable.idempotence=true requires max.in.flight.requests.per.connection <= {MAX_IN_FLIGHT_IDEMPOTENT}");
            }
        }
        Ok(s)
    }
}

/// Turns `\n`, `\t`, `\r` and `\\` escapes into their characters.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Where record values come from.
pub enum Payload {
    /// The same random A-Z bytes for every record.
    Fixed(Vec<u8>),
    /// Values picked at random from a file's pieces (stored back to back in `arena`).
    List { arena: Vec<u8>, ranges: Vec<(usize, usize)> },
    /// The record's index in decimal.
    Monotonic,
}

/// A small fast RNG (xorshift64*), one per thread.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

impl Payload {
    pub fn from_args(a: &ProduceArgs) -> Result<Payload> {
        if let Some(size) = a.record_size {
            let mut rng = Rng::new(PAYLOAD_SEED);
            return Ok(Payload::Fixed((0..size).map(|_| b'A' + rng.below(26) as u8).collect()));
        }
        if let Some(path) = &a.payload_file {
            println!("Reading payloads from: {}", path.canonicalize().unwrap_or_else(|_| path.clone()).display());
            let data = std::fs::read(path).with_context(|| format!("cannot read --payload-file {}", path.display()))?;
            let delim = unescape(&a.payload_delimiter).into_bytes();
            if delim.is_empty() {
                bail!("--payload-delimiter must not be empty");
            }
            let mut ranges = Vec::new();
            let mut start = 0;
            let mut i = 0;
            while i + delim.len() <= data.len() {
                if data[i..i + delim.len()] == delim[..] {
                    ranges.push((start, i - start));
                    i += delim.len();
                    start = i;
                } else {
                    i += 1;
                }
            }
            ranges.push((start, data.len() - start));
            // Like Java's String.split: trailing empty pieces are dropped.
            while ranges.last().is_some_and(|r| r.1 == 0) {
                ranges.pop();
            }
            println!("Number of messages read: {}", ranges.len());
            if ranges.is_empty() {
                bail!("File does not contain any payloads");
            }
            return Ok(Payload::List { arena: data, ranges });
        }
        Ok(Payload::Monotonic)
    }

    /// Typical value length, for sizing batches.
    fn typical_len(&self, num_records: u64) -> usize {
        match self {
            Payload::Fixed(v) => v.len(),
            Payload::List { ranges, .. } => (ranges.iter().map(|r| r.1).sum::<usize>() / ranges.len()).max(1),
            Payload::Monotonic => num_records.saturating_sub(1).max(1).to_string().len(),
        }
    }
}

/// Records per batch so that a batch of `value_len` values stays within `batch_size` bytes
/// (at least one record, as the Java producer always fits one).
fn records_per_batch(batch_size: usize, value_len: usize) -> u64 {
    let mut size = client::BATCH_HEADER_LEN;
    let mut n = 0usize;
    loop {
        let rec = client::record_len(n, value_len);
        if n > 0 && size + rec > batch_size {
            break;
        }
        size += rec;
        n += 1;
    }
    n as u64
}

/// The throttle schedule: record `i` is due at `start + i * interval`.
#[derive(Clone, Copy)]
struct Schedule {
    interval_ns: f64,
    /// Records whose intended times fit in one linger window (at least 1).
    linger_records: u64,
    linger_ns: u64,
}

/// The shared record counter and the rules for shaping requests.
struct Plan {
    total: u64,
    next: AtomicU64,
    batch_records: u64,
    schedule: Option<Schedule>,
    /// Time zero of the run.
    base: Instant,
}

/// A claimed request: records `first..first + sum(counts)`, one batch per count.
struct Claim {
    first: u64,
    counts: Vec<u64>,
    /// When to send it (throttled runs), as ns since `base`.
    send_at_ns: Option<u64>,
}

impl Plan {
    fn intended_ns(&self, s: &Schedule, i: u64) -> u64 {
        (i as f64 * s.interval_ns) as u64
    }

    /// Records from `from` on that are due at `now_ns` (bounded by what is left).
    fn due(&self, s: &Schedule, from: u64, now_ns: u64) -> u64 {
        let upto = ((now_ns as f64 / s.interval_ns).floor() as u64).saturating_add(1).min(self.total);
        upto.saturating_sub(from)
    }

    fn shape(&self, first: u64, now_ns: u64, max_batches: usize, counts: &mut Vec<u64>) -> Option<u64> {
        counts.clear();
        let mut at = first;
        match &self.schedule {
            None => {
                while counts.len() < max_batches && at < self.total {
                    let n = self.batch_records.min(self.total - at);
                    counts.push(n);
                    at += n;
                }
                None
            }
            Some(s) => {
                let rem = self.total - at;
                let n = self.batch_records.min(rem).min(self.due(s, at, now_ns).max(s.linger_records));
                counts.push(n);
                at += n;
                let last = self.intended_ns(s, at - 1);
                let send_at = if n == self.batch_records || n == rem { last } else { last.max(self.intended_ns(s, first) + s.linger_ns) };
                // Behind schedule: add further full batches that are already due.
                while counts.len() < max_batches && at < self.total {
                    let want = self.batch_records.min(self.total - at);
                    if self.due(s, at, now_ns) < want {
                        break;
                    }
                    counts.push(want);
                    at += want;
                }
                Some(send_at)
            }
        }
    }

    fn claim(&self, max_batches: usize) -> Option<Claim> {
        let mut counts = Vec::with_capacity(max_batches);
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            if cur >= self.total {
                return None;
            }
            let now_ns = self.base.elapsed().as_nanos() as u64;
            let send_at_ns = self.shape(cur, now_ns, max_batches, &mut counts);
            let n: u64 = counts.iter().sum();
            match self.next.compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Claim { first: cur, counts, send_at_ns }),
                Err(v) => cur = v,
            }
        }
    }
}

/// One batch of a request in flight.
#[derive(Clone, Copy)]
struct BatchMeta {
    partition: i32,
    first: u64,
    count: u64,
    value_bytes: u64,
    /// Value bytes of the records at or after the warm-up boundary.
    steady_bytes: u64,
}

/// A request written and not yet answered.
struct InFlight {
    correlation_id: i32,
    /// When the writer started writing it (ns since base).
    sent_ns: u64,
    /// Intended send time of the first record when unthrottled (ns since base).
    created_ns: u64,
    wire_bytes: u64,
    batches: Vec<BatchMeta>,
}

/// Window counters of one reader, read and reset by the reporting thread.
#[repr(align(64))]
#[derive(Default)]
struct WindowCell {
    count: AtomicU64,
    bytes: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_max_us: AtomicU64,
}

/// Totals of one phase (all records, or steady state only).
struct Totals {
    count: u64,
    bytes: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
    hist: Histogram<u64>,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            count: 0,
            bytes: 0,
            latency_sum_us: 0,
            latency_max_us: 0,
            hist: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG).expect("histogram bounds"),
        }
    }

    fn add_n(&mut self, latency_us: u64, n: u64) {
        self.count += n;
        self.latency_sum_us += latency_us * n;
        self.latency_max_us = self.latency_max_us.max(latency_us);
        self.hist.saturating_record_n(latency_us.max(1), n);
    }

    fn merge(&mut self, o: &Totals) {
        self.count += o.count;
        self.bytes += o.bytes;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.hist.add(&o.hist).ok();
    }
}

/// Request-level client metrics (for --print-metrics, and the round-trip line of --latency-us).
struct RequestMetrics {
    requests: u64,
    batches: u64,
    wire_bytes: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
    failed_records: u64,
    throttle_ms_sum: u64,
    /// Round trip of each request: from its write to its response, so without the time its
    /// records waited in a batch. What the broker (and the network) add to a record's latency.
    round_trip: Histogram<u64>,
}

impl RequestMetrics {
    fn new() -> RequestMetrics {
        RequestMetrics {
            requests: 0,
            batches: 0,
            wire_bytes: 0,
            latency_sum_us: 0,
            latency_max_us: 0,
            failed_records: 0,
            throttle_ms_sum: 0,
            round_trip: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG).expect("histogram bounds"),
        }
    }

    fn merge(&mut self, o: &RequestMetrics) {
        self.round_trip.add(&o.round_trip).ok();
        self.requests += o.requests;
        self.batches += o.batches;
        self.wire_bytes += o.wire_bytes;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.failed_records += o.failed_records;
        self.throttle_ms_sum += o.throttle_ms_sum;
    }
}

/// Everything shared by the threads of a run.
struct Shared {
    plan: Plan,
    warmup: u64,
    /// ns since base at which the first steady-state record was sent (+1; 0 = not yet).
    steady_start_ns: AtomicU64,
    abort: AtomicBool,
    fatal: Mutex<Option<String>>,
    errors_printed: AtomicU64,
    settings: ProducerSettings,
    topic: TopicInfo,
    payload: Payload,
}

impl Shared {
    fn fail(&self, msg: String) {
        let mut f = self.fatal.lock().unwrap();
        if f.is_none() {
            *f = Some(msg);
        }
        self.abort.store(true, Ordering::SeqCst);
    }

    fn now_ns(&self) -> u64 {
        self.plan.base.elapsed().as_nanos() as u64
    }
}

/// Per-thread accounting of completed records.
struct Recorder {
    all: Totals,
    steady: Totals,
    requests: RequestMetrics,
    window: Arc<WindowCell>,
}

impl Recorder {
    fn new(window: Arc<WindowCell>) -> Recorder {
        Recorder { all: Totals::new(), steady: Totals::new(), requests: RequestMetrics::new(), window }
    }

    /// Accounts a batch acknowledged at `ack_ns`.
    fn batch(&mut self, sh: &Shared, b: &BatchMeta, created_ns: u64, ack_ns: u64) {
        let warmup = sh.warmup;
        let (sum, max) = match &sh.plan.schedule {
            None => {
                let lat = ack_ns.saturating_sub(created_ns) / 1000;
                let steady_n = (b.first + b.count).saturating_sub(warmup.max(b.first));
                self.all.add_n(lat, b.count);
                if warmup > 0 && steady_n > 0 {
                    self.steady.add_n(lat, steady_n);
                }
                (lat * b.count, lat)
            }
            Some(s) => {
                let (mut sum, mut max) = (0, 0);
                for i in b.first..b.first + b.count {
                    let lat = ack_ns.saturating_sub(sh.plan.intended_ns(s, i)) / 1000;
                    self.all.add_n(lat, 1);
                    if warmup > 0 && i >= warmup {
                        self.steady.add_n(lat, 1);
                    }
                    sum += lat;
                    max = max.max(lat);
                }
                (sum, max)
            }
        };
        self.all.bytes += b.value_bytes;
        self.steady.bytes += b.steady_bytes;
        let w = &self.window;
        w.count.fetch_add(b.count, Ordering::Relaxed);
        w.bytes.fetch_add(b.value_bytes, Ordering::Relaxed);
        w.latency_sum_us.fetch_add(sum, Ordering::Relaxed);
        w.latency_max_us.fetch_max(max, Ordering::Relaxed);
    }

    fn request(&mut self, f: &InFlight, ack_ns: u64, throttle_ms: i32) {
        let lat = ack_ns.saturating_sub(f.sent_ns) / 1000;
        self.requests.requests += 1;
        self.requests.batches += f.batches.len() as u64;
        self.requests.wire_bytes += f.wire_bytes;
        self.requests.latency_sum_us += lat;
        self.requests.latency_max_us = self.requests.latency_max_us.max(lat);
        self.requests.round_trip.saturating_record(lat.max(1));
        self.requests.throttle_ms_sum += throttle_ms.max(0) as u64;
    }
}

/// The per-connection writer: claims records, builds the request, registers it, writes it.
struct Writer {
    sh: Arc<Shared>,
    stream: TcpStream,
    version: i16,
    partitions: Vec<i32>,
    cursor: usize,
    max_batches: usize,
    producer: Option<ProducerIdentity>,
    /// Next sequence per partition (index into `partitions`), idempotent runs only.
    sequences: Vec<i32>,
    next_correlation_id: i32,
    rng: Rng,
    frame: BytesMut,
    scratch: BytesMut,
    compressed: BytesMut,
    values: Vec<(usize, usize)>,
    mono: Vec<u8>,
}

impl Writer {
    fn run(mut self, tx: Option<mpsc::SyncSender<InFlight>>, mut own: Option<Recorder>) -> Option<Recorder> {
        let sh = self.sh.clone();
        while !sh.abort.load(Ordering::Relaxed) {
            let Some(claim) = sh.plan.claim(self.max_batches) else { break };
            if let Some(at) = claim.send_at_ns {
                let now = sh.now_ns();
                if at > now {
                    std::thread::sleep(Duration::from_nanos(at - now));
                }
            }
            let created_ns = sh.now_ns();
            if sh.warmup > 0 && claim.first <= sh.warmup && sh.warmup < claim.first + claim.counts.iter().sum::<u64>() {
                let _ = sh.steady_start_ns.compare_exchange(0, created_ns + 1, Ordering::AcqRel, Ordering::Relaxed);
            }
            let correlation_id = self.next_correlation_id;
            self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
            let batches = match self.build(&claim, correlation_id) {
                Ok(b) => b,
                Err(e) => {
                    sh.fail(format!("cannot build a produce request: {e:#}"));
                    break;
                }
            };
            let sent_ns = sh.now_ns();
            let inflight = InFlight { correlation_id, sent_ns, created_ns, wire_bytes: self.frame.len() as u64, batches };
            let inflight = match &tx {
                Some(tx) => {
                    // Blocks while max.in.flight requests are outstanding.
                    if tx.send(inflight).is_err() {
                        break; // the reader stopped
                    }
                    None
                }
                None => Some(inflight),
            };
            if let Err(e) = self.stream.write_all(&self.frame) {
                if !sh.abort.load(Ordering::Relaxed) {
                    sh.fail(format!("write to the broker failed: {e}"));
                }
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                break;
            }
            if let (Some(f), Some(rec)) = (inflight, own.as_mut()) {
                // acks=0: a record counts as sent once written.
                let now = sh.now_ns();
                for b in &f.batches {
                    rec.batch(&sh, b, f.created_ns, now);
                }
                rec.request(&f, now, 0);
            }
        }
        own
    }

    /// Builds the request frame for `claim` into `self.frame`.
    fn build(&mut self, claim: &Claim, correlation_id: i32) -> Result<Vec<BatchMeta>> {
        let sh = self.sh.clone();
        let s = &sh.settings;
        self.frame.clear();
        let ts = super::unix_ms();
        let mut frame = ProduceFrame::begin(
            &mut self.frame,
            self.version,
            correlation_id,
            &s.client_id,
            s.acks,
            s.request_timeout_ms,
            &sh.topic.name,
            sh.topic.id,
            claim.counts.len(),
        );
        let mut metas = Vec::with_capacity(claim.counts.len());
        let mut first = claim.first;
        for &count in &claim.counts {
            let slot = self.cursor % self.partitions.len();
            self.cursor = self.cursor.wrapping_add(1);
            let partition = self.partitions[slot];
            // Values of this batch.
            self.values.clear();
            let arena: &[u8] = match &sh.payload {
                Payload::Fixed(v) => {
                    self.values.resize(count as usize, (0, v.len()));
                    v
                }
                Payload::List { arena, ranges } => {
                    for _ in 0..count {
                        self.values.push(ranges[self.rng.below(ranges.len() as u64) as usize]);
                    }
                    arena
                }
                Payload::Monotonic => {
                    self.mono.clear();
                    for i in first..first + count {
                        let start = self.mono.len();
                        write!(&mut self.mono, "{i}").expect("write to vec");
                        self.values.push((start, self.mono.len() - start));
                    }
                    &self.mono
                }
            };
            let value_bytes: u64 = self.values.iter().map(|v| v.1 as u64).sum();
            let steady_bytes: u64 = if sh.warmup == 0 {
                0
            } else {
                let skip = sh.warmup.saturating_sub(first).min(count) as usize;
                self.values[skip..].iter().map(|v| v.1 as u64).sum()
            };
            let base_sequence = match self.producer {
                Some(_) => {
                    let seq = self.sequences[slot];
                    self.sequences[slot] = seq.wrapping_add(count as i32) & i32::MAX;
                    seq
                }
                None => -1,
            };
            let spec = BatchSpec { arena, values: &self.values, timestamp_ms: ts, codec: s.codec, producer: self.producer, base_sequence };
            if s.codec == Codec::None {
                let len = client::batch_len_uncompressed(&spec);
                let scratch = &mut self.scratch;
                frame.partition(&mut self.frame, partition, Some(len), |b| client::write_batch(b, &spec, scratch))?;
            } else {
                self.compressed.clear();
                let len = client::write_batch(&mut self.compressed, &spec, &mut self.scratch)?;
                let compressed = &self.compressed;
                frame.partition(&mut self.frame, partition, Some(len), |b| {
                    b.extend_from_slice(compressed);
                    Ok(len)
                })?;
            }
            metas.push(BatchMeta { partition, first, count, value_bytes, steady_bytes });
            first += count;
        }
        frame.finish(&mut self.frame)?;
        Ok(metas)
    }
}

/// The per-connection reader: pairs responses with registered requests and accounts them.
fn read_responses(sh: Arc<Shared>, mut stream: TcpStream, version: i16, rx: mpsc::Receiver<InFlight>, mut rec: Recorder) -> Recorder {
    let mut failed_codes: BTreeMap<i16, u64> = BTreeMap::new();
    let mut rbuf = BytesMut::new();
    while let Ok(f) = rx.recv() {
        let frame = match client::read_frame(&mut stream, &mut rbuf) {
            Ok(fr) => fr,
            Err(e) => {
                if !sh.abort.load(Ordering::Relaxed) {
                    let what = if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                        format!("no produce response within request.timeout.ms={}", sh.settings.request_timeout_ms)
                    } else {
                        format!("reading produce responses failed: {e}")
                    };
                    sh.fail(what);
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                break;
            }
        };
        let ack_ns = sh.now_ns();
        let resp = match client::decode_response::<ProduceRequest>(frame, version, f.correlation_id) {
            Ok(r) => r,
            Err(e) => {
                sh.fail(format!("bad produce response: {e:#}"));
                let _ = stream.shutdown(std::net::Shutdown::Both);
                break;
            }
        };
        rec.request(&f, ack_ns, resp.throttle_time_ms);
        for b in &f.batches {
            let code = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == b.partition)
                .map(|p| p.error_code)
                .unwrap_or(-1);
            if code == 0 {
                rec.batch(&sh, b, f.created_ns, ack_ns);
            } else {
                rec.requests.failed_records += b.count;
                *failed_codes.entry(code).or_default() += b.count;
                if sh.errors_printed.fetch_add(1, Ordering::Relaxed) < MAX_ERRORS_PRINTED {
                    let what = if code == -1 { "no answer for the partition".to_string() } else { client::error_name(code) };
                    eprintln!("error: {} records to {}-{} failed: {what}", b.count, sh.topic.name, b.partition);
                }
            }
        }
    }
    rec
}

/// Formats the final summary line, as kafka-producer-perf-test does.
fn total_line(t: &Totals, elapsed: Duration, steady: bool) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rps = t.count as f64 / secs;
    let mbps = t.bytes as f64 / secs / (1024.0 * 1024.0);
    let avg = if t.count == 0 { 0.0 } else { t.latency_sum_us as f64 / t.count as f64 / 1000.0 };
    let max = t.latency_max_us as f64 / 1000.0;
    let q = |p: f64| if t.count == 0 { 0 } else { t.hist.value_at_quantile(p) / 1000 };
    format!(
        "{}{} records sent, {:.6} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {} ms 50th, {} ms 95th, {} ms 99th, {} ms 99.9th.",
        t.count,
        if steady { " steady state" } else { "" },
        rps,
        mbps,
        avg,
        max,
        q(0.5),
        q(0.95),
        q(0.99),
        q(0.999)
    )
}

/// The same summary in microseconds (`--latency-us`).
/// The request round trips of a run (strand perf's own line; kafka-producer-perf-test has none).
fn round_trip_line(r: &RequestMetrics) -> String {
    let q = |p: f64| if r.requests == 0 { 0 } else { r.round_trip.value_at_quantile(p) };
    format!(
        "{} requests, round trip from write to response: {} us 50th, {} us 99th, {} us 99.9th, {} us max.",
        r.requests,
        q(0.5),
        q(0.99),
        q(0.999),
        r.latency_max_us
    )
}

fn total_line_us(t: &Totals, steady: bool) -> String {
    let avg = if t.count == 0 { 0.0 } else { t.latency_sum_us as f64 / t.count as f64 };
    let q = |p: f64| if t.count == 0 { 0 } else { t.hist.value_at_quantile(p) };
    format!(
        "{}{} records sent, {:.1} us avg latency, {} us max latency, {} us 50th, {} us 95th, {} us 99th, {} us 99.9th.",
        t.count,
        if steady { " steady state" } else { "" },
        avg,
        t.latency_max_us,
        q(0.5),
        q(0.95),
        q(0.99),
        q(0.999)
    )
}

/// Gets a producer id for the idempotent producer, or explains why it cannot.
fn init_producer_id(conn: &mut Conn) -> Result<ProducerIdentity> {
    if !conn.apis.supports(kafka_protocol::messages::ApiKey::InitProducerId) {
        bail!(
            "enable.idempotence=true needs InitProducerId, which the broker at {} does not support; \
             run with enable.idempotence=false",
            conn.addr
        );
    }
    let version = conn.version::<InitProducerIdRequest>(4)?;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp = conn.call(&req, version)?;
    if resp.error_code != 0 {
        bail!("InitProducerId failed: {}", client::error_name(resp.error_code));
    }
    Ok(ProducerIdentity { id: resp.producer_id.0, epoch: resp.producer_epoch })
}

pub fn run(a: ProduceArgs) -> Result<()> {
    let mut props = BTreeMap::new();
    if let Some(f) = &a.producer_config {
        props = super::read_properties(f)?;
    }
    if let Some(b) = &a.bootstrap_server {
        props.insert("bootstrap.servers".into(), b.clone());
    }
    super::parse_props(&a.producer_props, &mut props)?;
    let settings = ProducerSettings::from_props(&props)?;
    if a.throughput == 0.0 || a.throughput.is_nan() {
        bail!("--throughput must be positive, or -1 to disable throttling");
    }
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if a.reporting_interval_ms == 0 {
        bail!("--reporting-interval must be positive");
    }
    let payload = Payload::from_args(&a)?;
    if a.warmup_records > 0 {
        if a.warmup_records >= a.num_records {
            bail!("--warmup-records must be less than --num-records");
        }
        println!("Warmup first {} records. Steady state results will print after the complete test summary.", a.warmup_records);
    }

    let (mut boot, topic) = client::discover(&settings.servers, &settings.client_id, &a.topic, true)?;
    let producer = if settings.idempotence { Some(init_producer_id(&mut boot)?) } else { None };
    drop(boot);

    // Connections: `--connections` per leader; with idempotence each partition stays on one
    // connection so its sequence numbers arrive in order.
    struct ConnPlan {
        conn: Conn,
        version: i16,
        partitions: Vec<i32>,
        cursor: usize,
    }
    let mut conns: Vec<ConnPlan> = Vec::new();
    for node in topic.leaders() {
        let addr = topic.broker_addr(node).expect("leader listed").to_string();
        let parts: Vec<i32> = topic.partitions.iter().filter(|p| p.leader == node).map(|p| p.index).collect();
        let n = if producer.is_some() { a.connections.min(parts.len()) } else { a.connections };
        for c in 0..n {
            let conn = Conn::connect(&addr, &settings.client_id)?;
            let cap = if topic.id.is_nil() { 12 } else { MAX_PRODUCE_VERSION };
            let version = conn.version::<ProduceRequest>(cap)?;
            // Disjoint partition sets when there are enough partitions, else all of them.
            let mine: Vec<i32> = if parts.len() >= n { parts.iter().enumerate().filter(|(i, _)| i % n == c).map(|(_, p)| *p).collect() } else { parts.clone() };
            conns.push(ConnPlan { conn, version, partitions: mine, cursor: c });
        }
    }

    let batch_records = records_per_batch(settings.batch_size, payload.typical_len(a.num_records));
    let batch_bytes_est = client::BATCH_HEADER_LEN + client::records_len(&vec![(0, payload.typical_len(a.num_records)); batch_records as usize]);
    let per_request = (settings.max_request_size / batch_bytes_est.max(1)).max(1);
    let schedule = if a.throughput > 0.0 {
        let interval_ns = 1e9 / a.throughput;
        let linger_ns = settings.linger.as_nanos() as u64;
        Some(Schedule { interval_ns, linger_records: (linger_ns as f64 / interval_ns).floor() as u64 + 1, linger_ns })
    } else {
        None
    };
    let base = Instant::now();
    let sh = Arc::new(Shared {
        plan: Plan { total: a.num_records, next: AtomicU64::new(0), batch_records, schedule, base },
        warmup: a.warmup_records,
        steady_start_ns: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        fatal: Mutex::new(None),
        errors_printed: AtomicU64::new(0),
        settings: settings.clone(),
        topic: topic.clone(),
        payload,
    });

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut windows: Vec<Arc<WindowCell>> = Vec::new();
    let mut handles: Vec<std::thread::JoinHandle<Option<Recorder>>> = Vec::new();
    let timeout = Duration::from_millis(settings.request_timeout_ms as u64);
    for (i, cp) in conns.into_iter().enumerate() {
        cp.conn.set_timeouts(Some(timeout))?;
        let (wstream, rstream) = cp.conn.into_halves()?;
        let window = Arc::new(WindowCell::default());
        windows.push(window.clone());
        let n_parts = cp.partitions.len();
        let writer = Writer {
            sh: sh.clone(),
            stream: wstream,
            version: cp.version,
            max_batches: per_request.min(n_parts).max(1),
            partitions: cp.partitions,
            cursor: cp.cursor,
            producer,
            sequences: vec![0; n_parts],
            next_correlation_id: 1,
            rng: Rng::new(0x5eed + i as u64),
            frame: BytesMut::with_capacity(settings.batch_size + 1024),
            scratch: BytesMut::new(),
            compressed: BytesMut::new(),
            values: Vec::new(),
            mono: Vec::new(),
        };
        if settings.acks == 0 {
            let done = done_tx.clone();
            let rec = Recorder::new(window);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("perf-writer-{i}"))
                    .spawn(move || {
                        let r = writer.run(None, Some(rec));
                        drop(done);
                        r
                    })
                    .context("spawn writer")?,
            );
        } else {
            let (tx, rx) = mpsc::sync_channel::<InFlight>(settings.max_in_flight - 1);
            let done = done_tx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("perf-writer-{i}"))
                    .spawn(move || {
                        let r = writer.run(Some(tx), None);
                        drop(done);
                        r
                    })
                    .context("spawn writer")?,
            );
            let done = done_tx.clone();
            let sh2 = sh.clone();
            let version = cp.version;
            let rec = Recorder::new(window);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("perf-reader-{i}"))
                    .spawn(move || {
                        let r = read_responses(sh2, rstream, version, rx, rec);
                        drop(done);
                        Some(r)
                    })
                    .context("spawn reader")?,
            );
        }
    }
    drop(done_tx);

    // Window lines until every thread is done.
    let interval = Duration::from_millis(a.reporting_interval_ms);
    let mut window_start = Instant::now();
    loop {
        let wait = (window_start + interval).saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(wait) {
            Err(RecvTimeoutError::Disconnected) => break,
            Ok(()) => continue,
            Err(RecvTimeoutError::Timeout) => {
                let elapsed = window_start.elapsed().as_secs_f64();
                window_start = Instant::now();
                let (mut c, mut b, mut s, mut m) = (0u64, 0u64, 0u64, 0u64);
                for w in &windows {
                    c += w.count.swap(0, Ordering::Relaxed);
                    b += w.bytes.swap(0, Ordering::Relaxed);
                    s += w.latency_sum_us.swap(0, Ordering::Relaxed);
                    m = m.max(w.latency_max_us.swap(0, Ordering::Relaxed));
                }
                if c > 0 {
                    println!(
                        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                        c,
                        c as f64 / elapsed,
                        b as f64 / elapsed / (1024.0 * 1024.0),
                        s as f64 / c as f64 / 1000.0,
                        m as f64 / 1000.0
                    );
                }
            }
        }
    }
    let end_ns = sh.now_ns();
    let mut all = Totals::new();
    let mut steady = Totals::new();
    let mut reqs = RequestMetrics::new();
    for h in handles {
        if let Some(r) = h.join().map_err(|_| anyhow!("a perf thread panicked"))? {
            all.merge(&r.all);
            steady.merge(&r.steady);
            reqs.merge(&r.requests);
        }
    }
    if let Some(msg) = sh.fatal.lock().unwrap().take() {
        bail!("{msg} ({} of {} records acknowledged)", all.count, a.num_records);
    }
    let elapsed = Duration::from_nanos(end_ns);
    println!("{}", total_line(&all, elapsed, false));
    if a.latency_us {
        println!("{}", total_line_us(&all, false));
        println!("{}", round_trip_line(&reqs));
    }
    if a.warmup_records > 0 {
        let start = sh.steady_start_ns.load(Ordering::Acquire).saturating_sub(1);
        let steady_elapsed = Duration::from_nanos(end_ns.saturating_sub(start));
        println!("{}", total_line(&steady, steady_elapsed, true));
        if a.latency_us {
            println!("{}", total_line_us(&steady, true));
        }
    }
    if a.print_metrics {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let tag = format!("{{client-id={}}}", settings.client_id);
        let m = |name: &str, v: f64| (format!("producer-metrics:{name}:{tag}"), MetricValue::Float(v));
        let per = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let metrics = vec![
            m("batch-size-avg", per(reqs.wire_bytes, reqs.batches)),
            m("bufferpool-wait-time-total", 0.0),
            m("outgoing-byte-rate", reqs.wire_bytes as f64 / secs),
            m("outgoing-byte-total", reqs.wire_bytes as f64),
            m("produce-throttle-time-avg", per(reqs.throttle_ms_sum, reqs.requests)),
            m("record-error-total", reqs.failed_records as f64),
            m("record-send-rate", all.count as f64 / secs),
            m("record-send-total", all.count as f64),
            m("records-per-request-avg", per(all.count + reqs.failed_records, reqs.requests)),
            m("request-latency-avg", per(reqs.latency_sum_us, reqs.requests) / 1000.0),
            m("request-latency-max", reqs.latency_max_us as f64 / 1000.0),
            m("request-rate", reqs.requests as f64 / secs),
            m("request-total", reqs.requests as f64),
            m("batches-per-request-avg", per(reqs.batches, reqs.requests)),
            (format!("strand-perf:connections:{tag}"), MetricValue::Float(windows.len() as f64)),
            (format!("strand-perf:max-in-flight-per-connection:{tag}"), MetricValue::Float(settings.max_in_flight as f64)),
            (format!("strand-perf:records-per-batch:{tag}"), MetricValue::Float(batch_records as f64)),
            (format!("strand-perf:compression-type:{tag}"), MetricValue::Text(format!("{:?}", settings.codec).to_lowercase())),
        ];
        print_metrics(&metrics);
    }
    if reqs.failed_records > 0 {
        bail!("{} of {} records were not acknowledged", reqs.failed_records, a.num_records);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(total: u64, batch: u64, schedule: Option<Schedule>) -> Plan {
        Plan { total, next: AtomicU64::new(0), batch_records: batch, schedule, base: Instant::now() }
    }

    #[test]
    fn unthrottled_claims_cover_everything_once() {
        let p = plan(1003, 10, None);
        let mut seen = 0;
        while let Some(c) = p.claim(4) {
            assert_eq!(c.first, seen);
            assert!(c.counts.len() <= 4);
            seen += c.counts.iter().sum::<u64>();
        }
        assert_eq!(seen, 1003);
    }

    #[test]
    fn throttled_shapes_follow_linger_and_catch_up() {
        // 1000 rec/s, linger 5 ms -> 6 records per linger window.
        let s = Schedule { interval_ns: 1e6, linger_records: 6, linger_ns: 5_000_000 };
        let p = plan(10_000, 100, Some(s));
        let mut counts = Vec::new();
        // On time: one small batch, sent at first + linger.
        let at = p.shape(0, 0, 4, &mut counts).unwrap();
        assert_eq!(counts, vec![6]);
        assert_eq!(at, 5_000_000);
        // 1 s behind: full batches, several per request.
        let at = p.shape(0, 1_000_000_000, 4, &mut counts).unwrap();
        assert_eq!(counts, vec![100, 100, 100, 100]);
        assert!(at <= 1_000_000_000);
    }

    #[test]
    fn batch_sizing() {
        let n = records_per_batch(16384, 100);
        assert!(n > 100 && n < 160, "{n}");
        assert_eq!(records_per_batch(100, 1000), 1);
    }

    #[test]
    fn settings_parse() {
        let mut m = BTreeMap::new();
        m.insert("bootstrap.servers".to_string(), "127.0.0.1:9092".to_string());
        m.insert("acks".to_string(), "1".to_string());
        m.insert("compression.type".to_string(), "lz4".to_string());
        let s = ProducerSettings::from_props(&m).unwrap();
        assert_eq!(s.acks, 1);
        assert_eq!(s.codec, Codec::Lz4);
        m.insert("enable.idempotence".to_string(), "true".to_string());
        assert!(ProducerSettings::from_props(&m).is_err(), "idempotence needs acks=all");
    }

    #[test]
    fn unescape_delims() {
        assert_eq!(unescape("\\n"), "\n");
        assert_eq!(unescape("a\\tb"), "a\tb");
        assert_eq!(unescape("\n"), "\n");
    }
}
