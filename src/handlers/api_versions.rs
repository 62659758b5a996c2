//! ApiVersions: the served APIs and version ranges (see `protocol::versions`).

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use crate::protocol::versions::SUPPORTED;

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max))
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
        .with_throttle_time_ms(0)
        .with_finalized_features_epoch(-1)
}
