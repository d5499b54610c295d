//! The classic Prometheus text format (0.0.4), derived from prometheus-client's OpenMetrics
//! output, which is the only text it writes.
//!
//! The two formats share sample lines and differ in metadata: OpenMetrics names a counter's
//! family without `_total` and has `info` families, `# UNIT` lines and a closing `# EOF`.
//! A reader of the classic format (`promtool check metrics`, `curl` users, older scrapers)
//! would see a counter family with no samples and `_total` samples with no help or type, so
//! the metadata is renamed to the sample names and the rest dropped.

/// Rewrites an OpenMetrics exposition as the classic text format.
pub(super) fn from_openmetrics(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    // A family's `# HELP` comes before its `# TYPE`, which decides the family's new name.
    let mut help: Option<(&str, &str)> = None;
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                // stateset, gaugehistogram, unknown: nothing this crate registers.
                _ => ("", "untyped"),
            };
            if let Some((help_name, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {help_name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if line.starts_with('#') {
            // `# UNIT` and `# EOF` have no classic counterpart.
        } else if !line.is_empty() {
            // Sample lines are the same in both formats (this crate registers no exemplars,
            // the one OpenMetrics-only part of a sample).
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_info_are_renamed_and_openmetrics_only_lines_dropped() {
        let open = "# HELP pv_read Records read.\n\
                    # TYPE pv_read counter\n\
                    pv_read_total{pipeline=\"a\"} 3\n\
                    # HELP pv_build The build.\n\
                    # TYPE pv_build info\n\
                    pv_build_info{version=\"1\"} 1\n\
                    # HELP pv_wm_seconds Watermark.\n\
                    # TYPE pv_wm_seconds gauge\n\
                    # UNIT pv_wm_seconds seconds\n\
                    pv_wm_seconds 1.5\n\
                    # HELP pv_d Duration.\n\
                    # TYPE pv_d histogram\n\
                    pv_d_bucket{le=\"+Inf\"} 2\n\
                    pv_d_sum 0.2\n\
                    pv_d_count 2\n\
                    # EOF\n";
        let want = "# HELP pv_read_total Records read.\n\
                    # TYPE pv_read_total counter\n\
                    pv_read_total{pipeline=\"a\"} 3\n\
                    # HELP pv_build_info The build.\n\
                    # TYPE pv_build_info gauge\n\
                    pv_build_info{version=\"1\"} 1\n\
                    # HELP pv_wm_seconds Watermark.\n\
                    # TYPE pv_wm_seconds gauge\n\
                    pv_wm_seconds 1.5\n\
                    # HELP pv_d Duration.\n\
                    # TYPE pv_d histogram\n\
                    pv_d_bucket{le=\"+Inf\"} 2\n\
                    pv_d_sum 0.2\n\
                    pv_d_count 2\n";
        assert_eq!(from_openmetrics(open), want);
    }
}
