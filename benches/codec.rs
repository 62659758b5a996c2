//! Wire codec of the two hot APIs with realistic sizes: 16 partitions x ~16 KiB of records.
//! - Produce: request decode (what `handlers::dispatch` does) and response encode;
//! - Fetch: request decode and response encode (the response carries the records: it is the
//!   large one).
//! Versions: Produce v9 / Fetch v12 (flexible, topic names; what librdkafka 2.x sends) and
//! Produce v11 / Fetch v16 (the highest this broker serves; Fetch v16 identifies topics by id).
//!
//! Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

mod common;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, BrokerId, RequestHeader, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::hint::black_box;
use strand::protocol;

const PARTITIONS: i32 = 16;
const PER_PARTITION: usize = 16 << 10;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("bench-topic"))
}
fn topic_id() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5157_5a4e_4442_454e_4348_0000_0000_0001)
}

/// One ~16 KiB batch per partition (16 records of 1000 B: batch.size=16384, linger>0).
fn records() -> Bytes {
    Bytes::from(common::batch_of_about(PER_PARTITION, 1000))
}

/// A whole request frame as it arrives after the 4-byte size prefix: header then body.
fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("producer-1")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn produce_request(recs: &Bytes) -> RequestKind {
    let parts = (0..PARTITIONS)
        .map(|p| PartitionProduceData::default().with_index(p).with_records(Some(recs.clone())))
        .collect();
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic()).with_topic_id(topic_id()).with_partition_data(parts)]),
    )
}

fn produce_response() -> ResponseKind {
    let parts = (0..PARTITIONS)
        .map(|p| {
            PartitionProduceResponse::default()
                .with_index(p)
                .with_base_offset(1_000_000 + p as i64)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(0)
        })
        .collect();
    ResponseKind::Produce(ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(topic())
        .with_topic_id(topic_id())
        .with_partition_responses(parts)]))
}

fn fetch_request(version: i16) -> RequestKind {
    let parts = (0..PARTITIONS)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(1_000_000)
                .with_partition_max_bytes(1 << 20)
                .with_log_start_offset(-1)
        })
        .collect();
    let t = FetchTopic::default().with_topic_id(topic_id()).with_partitions(parts);
    let t = if version >= 13 { t } else { t.with_topic(topic()) };
    RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(50 << 20).with_topics(vec![t]))
}

/// Built as `handlers::fetch` builds it.
fn fetch_response(version: i16, recs: &Bytes) -> ResponseKind {
    let parts = (0..PARTITIONS)
        .map(|p| {
            PartitionData::default()
                .with_partition_index(p)
                .with_high_watermark(2_000_000)
                .with_last_stable_offset(2_000_000)
                .with_log_start_offset(0)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(recs.clone()))
        })
        .collect();
    let t = FetchableTopicResponse::default().with_topic_id(topic_id()).with_partitions(parts);
    let t = if version >= 13 { t } else { t.with_topic(topic()) };
    ResponseKind::Fetch(FetchResponse::default().with_responses(vec![t]).with_session_id(0))
}

/// Splits a frame into (header length, body) by decoding the header as the broker does.
fn body_of(key: ApiKey, version: i16, frame: &Bytes) -> Bytes {
    let mut b = frame.clone();
    protocol::decode_header(key, version, &mut b).unwrap();
    b
}

fn bench_requests(c: &mut Criterion) {
    let recs = records();
    let mut g = c.benchmark_group("codec/request_decode");
    for (key, version, req) in [
        (ApiKey::Produce, 9i16, produce_request(&recs)),
        (ApiKey::Produce, 11, produce_request(&recs)),
        (ApiKey::Fetch, 12, fetch_request(12)),
        (ApiKey::Fetch, 16, fetch_request(16)),
    ] {
        let f = frame(key, version, &req);
        let body = body_of(key, version, &f);
        g.throughput(Throughput::Bytes(f.len() as u64));
        let label = format!("{key:?}v{version}({}B)", f.len());
        // The kafka-protocol body decoder alone.
        g.bench_function(BenchmarkId::new("RequestKind::decode", &label), |b| {
            b.iter(|| {
                let mut x = body.clone();
                RequestKind::decode(key, black_box(&mut x), version).unwrap()
            })
        });
        // What dispatch does with a frame: prefix, header, body (with the panic guard).
        g.bench_function(BenchmarkId::new("strand_dispatch_decode", &label), |b| {
            b.iter(|| {
                let mut x = black_box(&f).clone();
                let p = protocol::peek_prefix(&x).unwrap();
                let h = protocol::decode_header(key, p.api_version, &mut x).unwrap();
                (h, protocol::decode_body(key, p.api_version, &mut x).unwrap())
            })
        });
    }
    g.finish();
}

fn bench_responses(c: &mut Criterion) {
    let recs = records();
    let mut g = c.benchmark_group("codec/response_encode");
    for (key, version, resp) in [
        (ApiKey::Produce, 9i16, produce_response()),
        (ApiKey::Produce, 11, produce_response()),
        (ApiKey::Fetch, 12, fetch_response(12, &recs)),
        (ApiKey::Fetch, 16, fetch_response(16, &recs)),
    ] {
        // The capacity hint handlers::respond computes.
        let hint = match &resp {
            ResponseKind::Fetch(f) => f
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.records.as_ref().map_or(0, |r| r.len()) + 64)
                .sum::<usize>(),
            _ => 256,
        };
        let len = protocol::encode_response(key, version, 42, &resp, hint).unwrap().len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("encode_response", format!("{key:?}v{version}({len}B)")), |b| {
            b.iter(|| protocol::encode_response(key, version, 42, black_box(&resp), hint).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_requests, bench_responses);
criterion_main!(benches);
