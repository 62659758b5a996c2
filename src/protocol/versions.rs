//! The APIs and versions this broker serves, as advertised in ApiVersions.
//!
//! Only what is really served is listed. Ranges are chosen for client compatibility:
//! - Produce starts at v0 because librdkafka only compresses when Produce v2 (MsgVer1) is
//!   advertised; v0-v2 requests (magic 0/1 message sets) are answered with
//!   UNSUPPORTED_FOR_MESSAGE_FORMAT, as Kafka 4.0 does.
//! - MsgVer2 in librdkafka needs Produce >= 3 and Fetch >= 4.
//! - KafkaJS has no flexible versions and picks within its own maxima.
//! - Admin APIs: the full ranges of the kafka-protocol crate (= Kafka 4.x brokers).

use kafka_protocol::messages::ApiKey;

/// (API, min version, max version)
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    // v6 (Kafka 4.0): an unknown group is GROUP_ID_NOT_FOUND (still state Dead) with a message.
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    // Admin. DescribeConfigs v0 was removed in Kafka 4.0 (KIP-896); librdkafka asks v1.
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
];

/// The served range of an API, if it is served at all.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|&(_, lo, hi)| (lo, hi))
}

pub fn is_supported(key: ApiKey, version: i16) -> bool {
    range(key).is_some_and(|(lo, hi)| version >= lo && version <= hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn ranges_are_decodable() {
        // Every advertised version must be one the codec can decode (except Produce v0-v2,
        // which the produce handler parses by hand).
        for &(key, lo, hi) in SUPPORTED {
            let codec = key.valid_versions();
            let lo = if key == ApiKey::Produce { 3 } else { lo };
            assert!(lo >= codec.min && hi <= codec.max, "{key:?} {lo}..{hi} outside codec {codec}");
        }
        assert_eq!(kafka_protocol::messages::ProduceRequest::VERSIONS.min, 3);
    }
}
