//! DescribeLogDirs: the one log directory (the data dir), the size of each asked partition
//! (asked from its owner shard), and from v4 the file system's total and usable bytes.
//! No replica moves exist, so offset_lag is 0 and is_future_key false.

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, TopicName};

use super::str_bytes;
use crate::routing::{ShardRequest, ShardResponse};
use crate::shard::Shard;

/// (total, usable) bytes of the file system holding `path`, or (-1, -1) if unknown.
fn fs_space(path: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return (-1, -1) };
    // SAFETY: statvfs is a C struct of integers, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (-1, -1);
    }
    let frsize = st.f_frsize as i64;
    (st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize)
}

pub async fn handle(shard: Rc<Shard>, version: i16, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let snap = shard.metadata();
    // Existing partitions asked for, in request order (all when topics is null).
    let wanted: Vec<(String, i32)> = match &req.topics {
        None => snap.topics.values().flat_map(|t| (0..t.partitions()).map(|p| (t.name.clone(), p))).collect(),
        Some(list) => list
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .filter(|(t, p)| snap.owner(t, *p).is_some())
            .collect(),
    };
    let mut per_owner: Vec<(Vec<usize>, Vec<(String, i32)>)> = (0..shard.shards()).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, (t, p)) in wanted.iter().enumerate() {
        let owner = snap.owner(t, *p).expect("filtered to existing partitions");
        per_owner[owner].0.push(i);
        per_owner[owner].1.push((t.clone(), *p));
    }
    let mut sizes: Vec<Option<u64>> = vec![None; wanted.len()];
    let mut idxs = Vec::new();
    let mut calls = Vec::new();
    for (owner, (idx, items)) in per_owner.into_iter().enumerate() {
        if !idx.is_empty() {
            idxs.push(idx);
            calls.push(shard.call(owner, ShardRequest::LogSizes { items }));
        }
    }
    for (idx, res) in idxs.into_iter().zip(join_all(calls).await) {
        let ShardResponse::LogSizes(s) = res else { unreachable!("log sizes answered with another kind") };
        for (i, size) in idx.into_iter().zip(s) {
            sizes[i] = size;
        }
    }
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for ((t, p), size) in wanted.into_iter().zip(sizes) {
        let Some(size) = size else { continue };
        let part = DescribeLogDirsPartition::default().with_partition_index(p).with_partition_size(size as i64).with_offset_lag(0);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partitions.push(part),
            _ => topics.push(DescribeLogDirsTopic::default().with_name(TopicName(str_bytes(t))).with_partitions(vec![part])),
        }
    }
    let dir = std::fs::canonicalize(&shard.config.data_dir).unwrap_or_else(|_| shard.config.data_dir.clone());
    let (total, usable) = if version >= 4 { fs_space(&dir) } else { (-1, -1) };
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}
