//! Table metadata (the `*.metadata.json` document), read and changed as JSON, so fields
//! another engine wrote survive our commits.
//!
//! The log version a table holds per pipeline is kept twice: in the summary of each
//! snapshot (`pageviews.pipeline`, `pageviews.log-version`, as Flink's sink records
//! `flink.max-committed-checkpoint-id`), and in a table property updated in the same commit
//! (`pageviews.log-version.<pipeline>`), which outlives the expiry of the snapshots.

use serde_json::{json, Map, Value};

/// Snapshot summary keys, and the property prefix, naming what the log committed.
pub(crate) const SUMMARY_PIPELINE: &str = "pageviews.pipeline";
pub(crate) const SUMMARY_VERSION: &str = "pageviews.log-version";

/// The table property holding the newest log version of `pipeline` in the table.
pub(crate) fn version_property(pipeline: &str) -> String {
    format!("{SUMMARY_VERSION}.{pipeline}")
}

/// A table's metadata as a catalog returned it.
#[derive(Debug, Clone)]
pub(crate) struct Metadata(pub(crate) Value);

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Metadata {
    pub(crate) fn uuid(&self) -> Option<&str> {
        self.0.get("table-uuid").and_then(Value::as_str)
    }

    pub(crate) fn location(&self) -> Option<&str> {
        self.0.get("location").and_then(Value::as_str)
    }

    pub(crate) fn snapshots(&self) -> &[Value] {
        self.0.get("snapshots").and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn current_snapshot_id(&self) -> Option<i64> {
        int(self.0.get("current-snapshot-id")).filter(|id| *id >= 0)
    }

    pub(crate) fn snapshot(&self, id: i64) -> Option<&Value> {
        self.snapshots().iter().find(|s| int(s.get("snapshot-id")) == Some(id))
    }

    pub(crate) fn current_snapshot(&self) -> Option<&Value> {
        self.snapshot(self.current_snapshot_id()?)
    }

    pub(crate) fn last_sequence_number(&self) -> i64 {
        int(self.0.get("last-sequence-number")).unwrap_or(0)
    }

    pub(crate) fn property(&self, key: &str) -> Option<&str> {
        self.0.get("properties")?.get(key)?.as_str()
    }

    /// The newest log version of `pipeline` the table holds: every file the log committed
    /// through it is in the table. From the property, or from the summaries of the current
    /// snapshot's ancestors, whichever is higher.
    pub(crate) fn committed_through(&self, pipeline: &str) -> u64 {
        let property = self.property(&version_property(pipeline)).and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut newest = 0;
        let mut at = self.current_snapshot_id();
        // Ancestors, newest first, until one of this pipeline's (or the expired past).
        while let Some(snapshot) = at.and_then(|id| self.snapshot(id)) {
            let summary = snapshot.get("summary");
            let ours =
                summary.and_then(|s| s.get(SUMMARY_PIPELINE)).and_then(Value::as_str) == Some(pipeline);
            if ours {
                newest = int(summary.and_then(|s| s.get(SUMMARY_VERSION))).unwrap_or(0).max(0) as u64;
                break;
            }
            at = int(snapshot.get("parent-snapshot-id"));
        }
        property.max(newest)
    }

    /// A summary total of the current snapshot (`total-records`, `total-data-files`…).
    pub(crate) fn current_total(&self, key: &str) -> Option<i64> {
        int(self.current_snapshot()?.get("summary")?.get(key))
    }

    /// Snapshots older than `cutoff_ms` that no branch or tag names: what expiry removes.
    /// The current snapshot always stays.
    pub(crate) fn expired(&self, cutoff_ms: i64) -> Vec<i64> {
        let referenced: Vec<i64> = self
            .0
            .get("refs")
            .and_then(Value::as_object)
            .map(|refs| refs.values().filter_map(|r| int(r.get("snapshot-id"))).collect())
            .unwrap_or_default();
        let current = self.current_snapshot_id();
        self.snapshots()
            .iter()
            .filter(|s| int(s.get("timestamp-ms")).is_some_and(|t| t < cutoff_ms))
            .filter_map(|s| int(s.get("snapshot-id")))
            .filter(|id| Some(*id) != current && !referenced.contains(id))
            .collect()
    }

    /// This metadata with `snapshot` as the current one on `main`, `properties` set and
    /// `remove` expired, as a catalog that stores whole metadata files commits it; with the
    /// metadata files that dropped out of the log of previous ones (to delete once it
    /// commits). `previous` is the location this metadata was read from.
    pub(crate) fn next(
        &self,
        snapshot: &Value,
        properties: &Map<String, Value>,
        remove: &[i64],
        previous: Option<&str>,
        now_ms: i64,
    ) -> (Value, Vec<String>) {
        let mut m = self.0.clone();
        let Some(obj) = m.as_object_mut() else { return (m, Vec::new()) };
        let id = int(snapshot.get("snapshot-id")).unwrap_or(0);
        let seq = int(snapshot.get("sequence-number")).unwrap_or(0);
        let mut snapshots: Vec<Value> = self
            .snapshots()
            .iter()
            .filter(|s| !int(s.get("snapshot-id")).is_some_and(|id| remove.contains(&id)))
            .cloned()
            .collect();
        snapshots.push(snapshot.clone());
        obj.insert("snapshots".into(), Value::Array(snapshots));
        let mut log: Vec<Value> = obj
            .get("snapshot-log")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter(|e| !int(e.get("snapshot-id")).is_some_and(|id| remove.contains(&id)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        log.push(json!({"timestamp-ms": now_ms, "snapshot-id": id}));
        obj.insert("snapshot-log".into(), Value::Array(log));
        obj.insert("current-snapshot-id".into(), json!(id));
        obj.insert("last-sequence-number".into(), json!(seq));
        obj.insert("last-updated-ms".into(), json!(now_ms));
        let refs = obj.entry("refs").or_insert_with(|| json!({}));
        if let Some(refs) = refs.as_object_mut() {
            refs.insert("main".into(), json!({"snapshot-id": id, "type": "branch"}));
        }
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.extend(properties.clone());
        }
        let keep = self
            .property("write.metadata.previous-versions-max")
            .and_then(|v| v.parse().ok())
            .unwrap_or(super::spec::PREVIOUS_VERSIONS_MAX);
        let mut metadata_log: Vec<Value> =
            obj.get("metadata-log").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(previous) = previous {
            metadata_log.push(json!({"timestamp-ms": int(self.0.get("last-updated-ms")).unwrap_or(now_ms), "metadata-file": previous}));
        }
        let cut = metadata_log.len().saturating_sub(keep);
        let dropped = metadata_log
            .drain(..cut)
            .filter_map(|e| e.get("metadata-file").and_then(Value::as_str).map(str::to_string))
            .collect();
        obj.insert("metadata-log".into(), Value::Array(metadata_log));
        (m, dropped)
    }

    /// The version in a metadata file's name (`00012-<uuid>.metadata.json`), 0 if none.
    pub(crate) fn file_version(location: &str) -> u64 {
        let name = location.rsplit('/').next().unwrap_or("");
        name.split('-').next().and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageviews_core::table::Table;

    fn snapshot(id: i64, parent: Option<i64>, seq: i64, at: i64, pipeline: &str, version: u64) -> Value {
        json!({"snapshot-id": id, "parent-snapshot-id": parent, "sequence-number": seq, "timestamp-ms": at,
               "manifest-list": format!("l{id}"), "summary": {"operation": "append",
               SUMMARY_PIPELINE: pipeline, SUMMARY_VERSION: version.to_string()}})
    }

    #[test]
    fn the_committed_version_survives_the_expiry_of_the_snapshots_that_carried_it() {
        let m = Metadata(super::super::spec::new_metadata(Table::PageViews, "file:///t", "u", 0));
        assert_eq!(m.committed_through("a"), 0);
        let props = |p: &str, v: u64| {
            let mut props = Map::new();
            props.insert(version_property(p), json!(v.to_string()));
            props
        };
        let (next, _) = m.next(&snapshot(1, None, 1, 10, "a", 5), &props("a", 5), &[], Some("f0"), 10);
        let m = Metadata(next);
        let (next, _) = m.next(&snapshot(2, Some(1), 2, 20, "b", 3), &props("b", 3), &[], Some("f1"), 20);
        let m = Metadata(next);
        assert_eq!((m.committed_through("a"), m.committed_through("b")), (5, 3));
        assert_eq!(m.expired(15), vec![1]);
        let (next, _) = m.next(&snapshot(3, Some(2), 3, 30, "b", 4), &props("b", 4), &[1], Some("f2"), 30);
        let m = Metadata(next);
        assert_eq!(m.snapshots().len(), 2);
        assert_eq!((m.committed_through("a"), m.committed_through("b")), (5, 4), "from the property");
        assert_eq!(m.last_sequence_number(), 3);
        assert_eq!(Metadata::file_version("file:///t/metadata/00012-abc.metadata.json"), 12);
    }
}
