//! Inputs: the original Flink job's example, page-view lines, and runs of the pipeline on them.

use std::path::Path;

use pageviews::{PipelineConfig, Shutdown, SourceConfig, Summary};
use pageviews_core::time::format_timestamp;

/// The original job's example: SW1A 1AA's five events on 2020-01-01 (HH:MM:SS)…
pub const SW1A_1AA: [&str; 5] = ["00:00:05", "00:00:47", "00:00:36", "00:01:53", "00:01:32"];
/// …and W1J 7NT's five.
pub const W1J_7NT: [&str; 5] = ["00:00:03", "00:00:08", "00:01:31", "00:01:19", "00:01:42"];

/// The example's ten events, the two postcodes interleaved as they arrive from a topic keyed
/// by postcode: (postcode, HH:MM:SS on 2020-01-01).
pub fn original_example() -> Vec<(&'static str, &'static str)> {
    SW1A_1AA.iter().zip(W1J_7NT).flat_map(|(a, b)| [("SW1A 1AA", *a), ("W1J 7NT", b)]).collect()
}

/// The example's ten events as input lines, user ids 0 to 9 in order.
pub fn original_example_lines() -> Vec<String> {
    original_example()
        .iter()
        .enumerate()
        .map(|(i, (p, t))| view(i as i64, p, &format!("2020-01-01 {t}")))
        .collect()
}

/// A page-view record as the original job's datagen wrote it.
pub fn view(user: i64, postcode: &str, ts: &str) -> String {
    format!(
        r#"{{"user_id": {user}, "postcode": "{postcode}", "webpage": "www.website.com/index.html", "timestamp": "{ts}"}}"#
    )
}

/// A page-view record at `ms` (UTC), on one of four pages picked by the user id.
pub fn view_at(user: i64, postcode: &str, ms: i64) -> String {
    format!(
        r#"{{"user_id": {user}, "postcode": "{postcode}", "webpage": "www.website.com/p{}.html", "timestamp": "{}"}}"#,
        user % 4,
        format_timestamp(ms)
    )
}

/// Writes `lines` to `dir/name`, one per line, and returns the path as a string.
pub fn write_input(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write input");
    path.display().to_string()
}

/// Runs the pipeline over files into `out` with default settings plus `tweak`.
pub fn run_files(paths: &[String], out: &Path, tweak: impl FnOnce(&mut PipelineConfig)) -> Summary {
    run_files_to(paths, &out.display().to_string(), tweak)
}

/// Runs the pipeline over files into `output` (a path or a bucket URL of the test store).
pub fn run_files_to(paths: &[String], output: &str, tweak: impl FnOnce(&mut PipelineConfig)) -> Summary {
    let mut config = PipelineConfig::new(SourceConfig::Files(paths.to_vec()), output);
    if crate::store::is_bucket_url(output) {
        config.store_env = crate::store::env();
    }
    tweak(&mut config);
    pageviews::run(config, Shutdown::default()).expect("pipeline run")
}

/// The example read grouped by postcode instead: SW1A 1AA's five (user 1), then W1J 7NT's
/// five (user 2). Once SW1A 1AA reaches 00:01:53 the watermark (00:01:48) has closed the
/// first window, so W1J 7NT's 00:00:03 and 00:00:08 are late.
pub fn original_example_grouped_lines() -> Vec<String> {
    let mut lines: Vec<String> =
        SW1A_1AA.iter().map(|t| view(1, "SW1A 1AA", &format!("2020-01-01 {t}"))).collect();
    lines.extend(W1J_7NT.iter().map(|t| view(2, "W1J 7NT", &format!("2020-01-01 {t}"))));
    lines
}
