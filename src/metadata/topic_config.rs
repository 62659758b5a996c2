//! Topic configs: Kafka's names, types and defaults, the broker settings they fall back to,
//! value validation, and the alterations of AlterConfigs / IncrementalAlterConfigs.
//!
//! Pure functions over config maps and the broker settings; knows nothing of logs, shards or
//! the wire. The log settings built from these live in `Shard::log_config`.

use std::collections::BTreeMap;

use crate::config::{BrokerConfig, ConfigKind};

use super::TopicMeta;

/// One topic config as Kafka defines it.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigKind,
    /// Kafka's default, used when neither the topic nor the broker sets it.
    pub default: &'static str,
    /// The broker setting that gives the default for every topic (Kafka's synonym); empty
    /// when Kafka has none.
    pub broker_key: &'static str,
    check: Check,
}

/// What a value must satisfy beyond parsing as its kind.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    AtLeast(i64),
    /// Integer range, both ends included.
    Between(i64, i64),
    /// One special value, or an integer range (both ends included).
    OrBetween(i64, i64, i64),
    /// Fraction in [0, 1].
    Ratio,
    /// One of (each element of a list: one of).
    OneOf(&'static [&'static str]),
}

const fn def(name: &'static str, kind: ConfigKind, default: &'static str, broker_key: &'static str, check: Check) -> TopicConfigDef {
    TopicConfigDef { name, kind, default, broker_key, check }
}

const I32_MAX: i64 = i32::MAX as i64;
const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Strand accepts (same order as `TOPIC_CONFIG_KEYS`).
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", ConfigKind::List, "delete", "log.cleanup.policy", Check::OneOf(&["compact", "delete"])),
    def("compression.gzip.level", ConfigKind::Int, "-1", "compression.gzip.level", Check::OrBetween(-1, 1, 9)),
    def("compression.lz4.level", ConfigKind::Int, "9", "compression.lz4.level", Check::Between(1, 17)),
    def(
        "compression.type",
        ConfigKind::Str,
        "producer",
        "compression.type",
        Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    def("compression.zstd.level", ConfigKind::Int, "3", "compression.zstd.level", Check::Between(-131072, 22)),
    def("delete.retention.ms", ConfigKind::Long, "86400000", "log.cleaner.delete.retention.ms", Check::AtLeast(0)),
    def("file.delete.delay.ms", ConfigKind::Long, "60000", "log.segment.delete.delay.ms", Check::AtLeast(0)),
    def("flush.messages", ConfigKind::Long, LONG_MAX, "log.flush.interval.messages", Check::AtLeast(1)),
    def("flush.ms", ConfigKind::Long, LONG_MAX, "log.flush.interval.ms", Check::AtLeast(0)),
    // Replication throttles: no broker-level synonym, nothing to throttle on one node (stored).
    def("follower.replication.throttled.replicas", ConfigKind::List, "", "", Check::None),
    def("index.interval.bytes", ConfigKind::Int, "4096", "log.index.interval.bytes", Check::Between(1, I32_MAX)),
    def("leader.replication.throttled.replicas", ConfigKind::List, "", "", Check::None),
    // Tiered storage is not available: its local retention is stored, it cannot be enabled.
    def("local.retention.bytes", ConfigKind::Long, "-2", "log.local.retention.bytes", Check::AtLeast(-2)),
    def("local.retention.ms", ConfigKind::Long, "-2", "log.local.retention.ms", Check::AtLeast(-2)),
    def("max.compaction.lag.ms", ConfigKind::Long, LONG_MAX, "log.cleaner.max.compaction.lag.ms", Check::AtLeast(1)),
    def("max.message.bytes", ConfigKind::Int, "1048588", "message.max.bytes", Check::Between(64, I32_MAX)),
    // Enforced on produce for CreateTime timestamps (INVALID_TIMESTAMP), as Kafka.
    def("message.timestamp.after.max.ms", ConfigKind::Long, "3600000", "log.message.timestamp.after.max.ms", Check::AtLeast(0)),
    def("message.timestamp.before.max.ms", ConfigKind::Long, LONG_MAX, "log.message.timestamp.before.max.ms", Check::AtLeast(0)),
    def(
        "message.timestamp.type",
        ConfigKind::Str,
        "CreateTime",
        "log.message.timestamp.type",
        Check::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    def("min.cleanable.dirty.ratio", ConfigKind::Double, "0.5", "log.cleaner.min.cleanable.ratio", Check::Ratio),
    def("min.compaction.lag.ms", ConfigKind::Long, "0", "log.cleaner.min.compaction.lag.ms", Check::AtLeast(0)),
    def("min.insync.replicas", ConfigKind::Int, "1", "min.insync.replicas", Check::Between(1, I32_MAX)),
    def("preallocate", ConfigKind::Boolean, "false", "log.preallocate", Check::None),
    def("remote.log.copy.disable", ConfigKind::Boolean, "false", "", Check::None),
    def("remote.log.delete.on.disable", ConfigKind::Boolean, "false", "", Check::None),
    def("remote.storage.enable", ConfigKind::Boolean, "false", "", Check::OneOf(&["false"])),
    def("retention.bytes", ConfigKind::Long, "-1", "log.retention.bytes", Check::AtLeast(-1)),
    def("retention.ms", ConfigKind::Long, "604800000", "log.retention.ms", Check::AtLeast(-1)),
    def("segment.bytes", ConfigKind::Int, "1073741824", "log.segment.bytes", Check::Between(14, I32_MAX)),
    def("segment.index.bytes", ConfigKind::Int, "10485760", "log.index.size.max.bytes", Check::Between(4, I32_MAX)),
    def("segment.jitter.ms", ConfigKind::Long, "0", "log.roll.jitter.ms", Check::AtLeast(0)),
    def("segment.ms", ConfigKind::Long, "604800000", "log.roll.ms", Check::AtLeast(1)),
    def("unclean.leader.election.enable", ConfigKind::Boolean, "false", "unclean.leader.election.enable", Check::None),
];

/// The definition of a topic config, if Strand knows it.
pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Where a config value comes from (Kafka's DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set on the topic.
    Topic,
    /// Set in the broker's config file or `--set`.
    StaticBroker,
    /// Nobody set it: the default.
    Default,
}

impl Source {
    pub fn code(self) -> i8 {
        match self {
            Source::Topic => 1,        // DYNAMIC_TOPIC_CONFIG
            Source::StaticBroker => 4, // STATIC_BROKER_CONFIG
            Source::Default => 5,      // DEFAULT_CONFIG
        }
    }
}

/// The value every topic gets when it does not set `d`: the broker's setting when Strand has
/// one, else Kafka's default.
pub fn broker_level(d: &TopicConfigDef, broker: &BrokerConfig) -> (String, Source) {
    match broker.value_of(d.broker_key) {
        Some((v, _)) if broker.is_explicit(d.broker_key) => (v, Source::StaticBroker),
        Some((v, _)) => (v, Source::Default),
        None => (d.default.to_string(), Source::Default),
    }
}

/// The value in force for a topic, and where it comes from.
pub fn effective(topic: &TopicMeta, d: &TopicConfigDef, broker: &BrokerConfig) -> (String, Source) {
    match topic.configs.get(d.name) {
        Some(v) => (v.clone(), Source::Topic),
        None => broker_level(d, broker),
    }
}

/// Checks a value for a topic config; returns it normalized (trimmed, booleans lower case).
/// Errors read as Kafka's ("Unknown topic config name: x", "Invalid value ... for configuration").
pub fn validate(name: &str, value: &str) -> Result<String, String> {
    let d = lookup(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    let v = value.trim();
    let bad = |why: String| Err(format!("Invalid value {v} for configuration {name}: {why}"));
    let number = match d.kind {
        ConfigKind::Int => match v.parse::<i32>() {
            Ok(n) => Some(n as i64),
            Err(_) => return bad("Not a number of type INT".into()),
        },
        ConfigKind::Long => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return bad("Not a number of type LONG".into()),
        },
        ConfigKind::Boolean => {
            let b = v.to_ascii_lowercase();
            return match (b.as_str(), d.check) {
                ("true" | "false", Check::OneOf(allowed)) if !allowed.contains(&b.as_str()) => {
                    bad(format!("Value must be one of: {}", allowed.join(", ")))
                }
                ("true" | "false", _) => Ok(b),
                _ => bad("Expected value to be either true or false".into()),
            };
        }
        _ => None,
    };
    match (d.check, number) {
        (Check::AtLeast(min), Some(n)) if n < min => bad(format!("Value must be at least {min}")),
        (Check::Between(lo, hi), Some(n)) if n < lo || n > hi => bad(format!("Value must be between {lo} and {hi}")),
        (Check::OrBetween(special, lo, hi), Some(n)) if n != special && (n < lo || n > hi) => {
            bad(format!("Value must be {special} or between {lo} and {hi}"))
        }
        (Check::Ratio, _) => match v.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(v.to_string()),
            _ => bad("Value must be a number between 0 and 1".into()),
        },
        (Check::OneOf(allowed), _) if d.kind == ConfigKind::List => {
            let items = split_list(v);
            if items.is_empty() {
                return bad(format!("List must not be empty; allowed values: [{}]", allowed.join(", ")));
            }
            match items.iter().find(|i| !allowed.contains(&i.as_str())) {
                Some(i) => bad(format!("String must be one of: {} (got {i})", allowed.join(", "))),
                None => Ok(items.join(",")),
            }
        }
        (Check::OneOf(allowed), _) if !allowed.contains(&v) => bad(format!("String must be one of: {}", allowed.join(", "))),
        _ => Ok(v.to_string()),
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// One alteration of a topic config (IncrementalAlterConfigs op codes 0-3).
#[derive(Debug, Clone, PartialEq)]
pub enum AlterOp {
    Set(String),
    /// Back to the broker-level value.
    Delete,
    /// List configs only: add elements not already present.
    Append(String),
    /// List configs only: remove elements.
    Subtract(String),
}

/// Applies `ops` to a topic's configs and validates the result. `replace` (AlterConfigs)
/// starts from no topic configs: every config not set by `ops` goes back to its default.
/// APPEND/SUBTRACT start from the topic's value, else Kafka's default for the config.
pub fn alter(current: &BTreeMap<String, String>, replace: bool, ops: &[(String, AlterOp)]) -> Result<BTreeMap<String, String>, String> {
    let mut next = if replace { BTreeMap::new() } else { current.clone() };
    for (name, op) in ops {
        let d = lookup(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
        match op {
            AlterOp::Set(v) => {
                let v = validate(name, v)?;
                next.insert(name.clone(), v);
            }
            AlterOp::Delete => {
                next.remove(name);
            }
            AlterOp::Append(v) | AlterOp::Subtract(v) => {
                if d.kind != ConfigKind::List {
                    return Err(format!("Config value append/subtract is not allowed for config key: {name} (not a list)"));
                }
                let mut items = split_list(next.get(name).map_or(d.default, |s| s.as_str()));
                let given = split_list(v);
                if matches!(op, AlterOp::Append(_)) {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                let v = validate(name, &items.join(","))?;
                next.insert(name.clone(), v);
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_accepted_keys() {
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        assert_eq!(names, super::super::TOPIC_CONFIG_KEYS);
        for d in TOPIC_CONFIGS {
            assert_eq!(validate(d.name, d.default).as_deref(), Ok(d.default), "default of {} must be valid", d.name);
        }
    }

    #[test]
    fn validation_messages() {
        assert_eq!(validate("segment.bytes", " 2048 ").unwrap(), "2048");
        let e = validate("segment.bytes", "abc").unwrap_err();
        assert!(e.contains("segment.bytes") && e.contains("INT"), "{e}");
        assert!(validate("segment.bytes", "13").unwrap_err().contains("between 14"));
        assert!(validate("retention.ms", "-2").unwrap_err().contains("at least -1"));
        assert_eq!(validate("preallocate", "TRUE").unwrap(), "true");
        assert!(validate("cleanup.policy", "delete,nope").is_err());
        assert_eq!(validate("cleanup.policy", "compact, delete").unwrap(), "compact,delete");
        assert!(validate("compression.type", "brotli").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("no.such", "1").unwrap_err().starts_with("Unknown topic config name"));
        assert!(validate("compression.gzip.level", "0").is_err(), "gzip: -1 or 1..9, as Kafka");
        assert_eq!(validate("compression.gzip.level", "-1").unwrap(), "-1");
        assert!(validate("compression.gzip.level", "10").is_err());
        assert!(validate("remote.storage.enable", "true").is_err(), "no tiered storage");
        assert_eq!(validate("remote.storage.enable", "FALSE").unwrap(), "false");
        assert!(validate("message.timestamp.after.max.ms", "-1").is_err());
    }

    #[test]
    fn alterations() {
        let mut cur = BTreeMap::new();
        cur.insert("retention.ms".to_string(), "1000".to_string());
        let set = |k: &str, v: &str| (k.to_string(), AlterOp::Set(v.to_string()));
        let n = alter(&cur, false, &[set("segment.bytes", "4096")]).unwrap();
        assert_eq!(n.len(), 2);
        let n = alter(&cur, true, &[set("segment.bytes", "4096")]).unwrap();
        assert_eq!(n.len(), 1, "AlterConfigs replaces the whole set");
        let n = alter(&cur, false, &[("retention.ms".into(), AlterOp::Delete)]).unwrap();
        assert!(n.is_empty());
        let n = alter(&cur, false, &[("cleanup.policy".into(), AlterOp::Append("compact".into()))]).unwrap();
        assert_eq!(n["cleanup.policy"], "delete,compact");
        let n = alter(&n, false, &[("cleanup.policy".into(), AlterOp::Subtract("delete".into()))]).unwrap();
        assert_eq!(n["cleanup.policy"], "compact");
        assert!(alter(&n, false, &[("cleanup.policy".into(), AlterOp::Subtract("compact".into()))]).is_err());
        assert!(alter(&cur, false, &[("retention.ms".into(), AlterOp::Append("5".into()))]).is_err());
        assert!(alter(&cur, false, &[set("segment.bytes", "x")]).is_err());
    }
}
