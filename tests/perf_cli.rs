//! End-to-end tests of `strand perf`: the producer and consumer benchmarks against a real
//! broker (output format, exact record counts, throttling, compression codecs, idempotent
//! producing, consumer-group commits) and the producer against `strand perf sink` (including
//! the refusal of idempotence when InitProducerId is missing).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Broker, StartOpts};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use regex::Regex;
use strand::perf::client;

const FINAL_LINE: &str = r"^(\d+)( steady state)? records sent, \d+\.\d{6} records/sec \(\d+\.\d{2} MB/sec\), \d+\.\d{2} ms avg latency, \d+\.\d{2} ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.$";
const US_LINE: &str = r"^\d+( steady state)? records sent, \d+\.\d us avg latency, \d+ us max latency, \d+ us 50th, \d+ us 95th, \d+ us 99th, \d+ us 99\.9th\.$";
const WINDOW_LINE: &str = r"^\d+ records sent, \d+\.\d records/sec \(\d+\.\d{2} MB/sec\), \d+\.\d ms avg latency, \d+\.\d ms max latency\.$";
const CONSUME_HEADER: &str = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec";
const DATE: &str = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{3}";
const F4: &str = r"(?:\d+\.\d{4}|Infinity|NaN)";

fn strand(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strand")).args(args).stdin(Stdio::null()).output().expect("run strand")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn produce(bootstrap: &str, topic: &str, extra: &[&str], props: &[&str]) -> Output {
    let mut args = vec!["perf", "produce", "--topic", topic];
    args.extend_from_slice(extra);
    args.push("--producer-props");
    let bs = format!("bootstrap.servers={bootstrap}");
    args.push(&bs);
    args.extend_from_slice(props);
    strand(&args)
}

/// Checks a successful produce run and returns the record count of its final line.
fn final_count(o: &Output) -> u64 {
    let (out, err) = text(o);
    assert!(o.status.success(), "perf produce failed: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status);
    let re = Regex::new(FINAL_LINE).unwrap();
    let window = Regex::new(WINDOW_LINE).unwrap();
    let us = Regex::new(US_LINE).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    for l in &lines {
        if l.contains("records sent") {
            assert!(re.is_match(l) || window.is_match(l) || us.is_match(l), "unexpected line {l:?}");
        }
    }
    let last = lines
        .iter()
        .rev()
        .filter_map(|l| re.captures(l))
        .find(|c| c.get(2).is_none())
        .unwrap_or_else(|| panic!("no final line in:\n{out}"));
    last[1].parse().unwrap()
}

/// Runs perf consume and returns (messages in its row, stdout).
fn consume(bootstrap: &str, topic: &str, messages: u64, extra: &[&str]) -> (u64, String, String) {
    let m = messages.to_string();
    let mut args = vec!["perf", "consume", "--bootstrap-server", bootstrap, "--topic", topic, "--messages", &m];
    args.extend_from_slice(extra);
    let o = strand(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "perf consume failed: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status);
    let row = Regex::new(&format!(r"^{DATE}, {DATE}, {F4}, {F4}, (\d+), {F4}, \d+, -?\d+, {F4}, {F4}$")).unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(CONSUME_HEADER), "header missing:\n{out}");
    let r = out.lines().find_map(|l| row.captures(l)).unwrap_or_else(|| panic!("no summary row in:\n{out}\nstderr:\n{err}"));
    (r[1].parse().unwrap(), out, err)
}

/// Sum over partitions of the latest offsets of `topic`.
fn end_offsets(bootstrap: &str, topic: &str) -> i64 {
    let (mut conn, info) = client::discover(&[bootstrap.to_string()], "perf-cli-test", topic, false).unwrap();
    let version = conn.version::<ListOffsetsRequest>(7).unwrap();
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(info.partitions.iter().map(|p| ListOffsetsPartition::default().with_partition_index(p.index).with_timestamp(-1)).collect())]);
    let resp = conn.call(&req, version).unwrap();
    resp.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| {
        assert_eq!(p.error_code, 0);
        p.offset
    }).sum()
}

#[test]
fn produce_20000_then_consume_exactly_20000() {
    let b = Broker::start(StartOpts::default());
    let bs = b.bootstrap();
    let o = produce(&bs, "p", &["--num-records", "20000", "--record-size", "100", "--throughput", "-1"], &["acks=all"]);
    assert_eq!(final_count(&o), 20000);
    assert_eq!(end_offsets(&bs, "p"), 20000);

    let (n, _, _) = consume(&bs, "p", 20000, &[]);
    assert_eq!(n, 20000);
    // Asking for one more finds exactly 20000 and says so.
    let (n, out, _) = consume(&bs, "p", 20001, &["--timeout", "1500"]);
    assert_eq!(n, 20000);
    assert!(out.contains("WARNING: Exiting before consuming the expected number of messages"), "{out}");
}

#[test]
fn throttled_run_takes_its_time() {
    let b = Broker::start(StartOpts::default());
    let started = Instant::now();
    let o = produce(&b.bootstrap(), "slow", &["--num-records", "4000", "--record-size", "100", "--throughput", "2000", "--latency-us", "--reporting-interval", "500"], &["acks=1"]);
    let took = started.elapsed();
    assert_eq!(final_count(&o), 4000);
    assert!(took >= Duration::from_millis(1500), "4000 records at 2000/s took only {took:?}");
    let (out, _) = text(&o);
    assert!(out.contains(" us avg latency, "), "--latency-us line missing:\n{out}");
    // The request round trips (write to response) come with --latency-us, in order.
    let rt = Regex::new(r"^(\d+) requests, round trip from write to response: (\d+) us 50th, (\d+) us 99th, (\d+) us 99\.9th, (\d+) us max\.$").unwrap();
    let c = out.lines().find_map(|l| rt.captures(l)).unwrap_or_else(|| panic!("round-trip line missing:\n{out}"));
    let v: Vec<u64> = (1..=5).map(|i| c[i].parse().unwrap()).collect();
    assert!(v[0] >= 1, "no request counted:\n{out}");
    assert!(v[1] >= 1 && v[1] <= v[2] && v[2] <= v[3], "round-trip percentiles out of order:\n{out}");
    let window = Regex::new(WINDOW_LINE).unwrap();
    assert!(out.lines().filter(|l| window.is_match(l)).count() >= 2, "expected window lines every 500 ms:\n{out}");
}

#[test]
fn codecs_payload_modes_and_partitions_round_trip() {
    let b = Broker::start(StartOpts::default().set("num.partitions", "3"));
    let bs = b.bootstrap();
    let mut total = 0;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let c = format!("compression.type={codec}");
        let o = produce(&bs, "codecs", &["--num-records", "3000", "--record-size", "200", "--throughput", "-1"], &["acks=1", &c, "batch.size=4096"]);
        assert_eq!(final_count(&o), 3000, "codec {codec}");
        total += 3000;
    }
    let o = produce(&bs, "codecs", &["--num-records", "2000", "--payload-monotonic", "--throughput", "-1", "--warmup-records", "500"], &["acks=1"]);
    assert_eq!(final_count(&o), 2000);
    let (out, _) = text(&o);
    assert!(out.contains("1500 steady state records sent, "), "steady-state line missing:\n{out}");
    total += 2000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payloads.txt");
    std::fs::write(&file, "alpha\nbeta\ngamma delta\n").unwrap();
    let o = produce(&bs, "codecs", &["--num-records", "1000", "--payload-file", file.to_str().unwrap(), "--throughput", "-1"], &["acks=1"]);
    assert_eq!(final_count(&o), 1000);
    assert!(text(&o).0.contains("Number of messages read: 3"));
    total += 1000;

    assert_eq!(end_offsets(&bs, "codecs"), total as i64);
    let (n, _, _) = consume(&bs, "codecs", total, &["--connections", "2"]);
    assert_eq!(n, total);
}

#[test]
fn idempotent_produce_and_group_consume_resume_from_commits() {
    let b = Broker::start(StartOpts::default().set("num.partitions", "2"));
    let bs = b.bootstrap();
    let o = produce(&bs, "g", &["--num-records", "30000", "--record-size", "50", "--throughput", "-1"], &["acks=all", "enable.idempotence=true"]);
    assert_eq!(final_count(&o), 30000);
    assert_eq!(end_offsets(&bs, "g"), 30000);
    // A group member consumes part, commits exactly what it counted; the next one resumes.
    let (n, out, err) = consume(&bs, "g", 12345, &["--group", "perf-group"]);
    assert_eq!(n, 12345, "{out}\n{err}");
    let (n, out, err) = consume(&bs, "g", 17655, &["--group", "perf-group", "--timeout", "3000"]);
    assert_eq!(n, 17655, "{out}\n{err}");
    assert!(!out.contains("WARNING"), "{out}");
    let (n, out, _) = consume(&bs, "g", 1, &["--group", "perf-group", "--timeout", "500"]);
    assert_eq!(n, 0, "{out}");
}

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn produce_against_the_sink_completes() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sink = Sink(
        Command::new(env!("CARGO_BIN_EXE_strand"))
            .args(["perf", "sink", "--listen", &addr, "--partitions", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sink"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    for acks in ["acks=1", "acks=0", "acks=all"] {
        let o = produce(&addr, "sunk", &["--num-records", "200000", "--record-size", "100", "--throughput", "-1"], &[acks]);
        assert_eq!(final_count(&o), 200000, "{acks}");
    }
    // The sink grants producer ids, so the idempotent path runs end to end.
    let o = produce(&addr, "sunk", &["--num-records", "50000", "--record-size", "100", "--throughput", "-1"], &["acks=all", "enable.idempotence=true"]);
    assert_eq!(final_count(&o), 50000);
    drop(sink);

    // Without InitProducerId, enable.idempotence=true is refused with a clear message.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _sink = Sink(
        Command::new(env!("CARGO_BIN_EXE_strand"))
            .args(["perf", "sink", "--listen", &addr, "--no-init-producer-id"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sink"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = produce(&addr, "sunk", &["--num-records", "10", "--record-size", "10", "--throughput", "-1"], &["acks=all", "enable.idempotence=true"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("InitProducerId"), "unclear idempotence error:\n{err}");
}
