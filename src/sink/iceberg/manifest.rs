//! Manifests and manifest lists: Iceberg's Avro files naming a snapshot's data files.
//!
//! Written with the v2 schemas' required fields and the partition, each field with its
//! Iceberg `field-id`, which readers (Java, pyiceberg) resolve fields by; optional
//! statistics are left out (a reader takes them as unknown). Read back by field name, so
//! manifests another engine wrote (Spark's `rewrite_data_files`) are read too.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::types::Value as Avro;
use apache_avro::{Codec, Reader, Schema, Writer};
use pageviews_core::table::Table;

use super::spec::{self, PARTITION_FIELD_ID};
use super::IcebergError;

/// Status of a manifest entry.
pub(crate) const ADDED: i32 = 1;
pub(crate) const EXISTING: i32 = 0;
const DELETED: i32 = 2;

/// One data file as a manifest lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DataFile {
    pub(crate) path: String,
    pub(crate) hour: Option<i32>,
    pub(crate) records: i64,
    pub(crate) bytes: i64,
    pub(crate) status: i32,
    /// The snapshot that added it.
    pub(crate) snapshot_id: Option<i64>,
    /// Its data sequence number; `None` inherits the manifest's.
    pub(crate) sequence: Option<i64>,
    pub(crate) file_sequence: Option<i64>,
}

/// One manifest as a manifest list names it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManifestFile {
    pub(crate) path: String,
    pub(crate) length: i64,
    pub(crate) sequence: i64,
    pub(crate) min_sequence: i64,
    pub(crate) added_snapshot_id: i64,
    pub(crate) added_files: i32,
    pub(crate) existing_files: i32,
    pub(crate) deleted_files: i32,
    pub(crate) added_rows: i64,
    pub(crate) existing_rows: i64,
    pub(crate) deleted_rows: i64,
    /// Lowest and highest partition hour of its files.
    pub(crate) hours: Option<(i32, i32)>,
    /// A data manifest (0) or a delete manifest (1).
    pub(crate) content: i32,
}

fn entry_schema(table: Table) -> Result<Schema, IcebergError> {
    let json = serde_json::json!({
        "type": "record", "name": "manifest_entry", "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
            {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
            {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
            {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
                {"name": "content", "type": "int", "field-id": 134},
                {"name": "file_path", "type": "string", "field-id": 100},
                {"name": "file_format", "type": "string", "field-id": 101},
                {"name": "partition", "field-id": 102, "type": {"type": "record", "name": "r102", "fields": [
                    {"name": spec::partition_name(table), "type": ["null", "int"], "default": null,
                     "field-id": PARTITION_FIELD_ID},
                ]}},
                {"name": "record_count", "type": "long", "field-id": 103},
                {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
            ]}},
        ]
    });
    Schema::parse(&json).map_err(avro("the manifest schema"))
}

fn list_schema() -> Result<&'static Schema, IcebergError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    let parsed = SCHEMA.get_or_init(|| {
        let json = serde_json::json!({
            "type": "record", "name": "manifest_file", "fields": [
                {"name": "manifest_path", "type": "string", "field-id": 500},
                {"name": "manifest_length", "type": "long", "field-id": 501},
                {"name": "partition_spec_id", "type": "int", "field-id": 502},
                {"name": "content", "type": "int", "field-id": 517},
                {"name": "sequence_number", "type": "long", "field-id": 515},
                {"name": "min_sequence_number", "type": "long", "field-id": 516},
                {"name": "added_snapshot_id", "type": "long", "field-id": 503},
                {"name": "added_files_count", "type": "int", "field-id": 504},
                {"name": "existing_files_count", "type": "int", "field-id": 505},
                {"name": "deleted_files_count", "type": "int", "field-id": 506},
                {"name": "added_rows_count", "type": "long", "field-id": 512},
                {"name": "existing_rows_count", "type": "long", "field-id": 513},
                {"name": "deleted_rows_count", "type": "long", "field-id": 514},
                {"name": "partitions", "default": null, "field-id": 507, "type": ["null", {
                    "type": "array", "element-id": 508, "items": {"type": "record", "name": "r508", "fields": [
                        {"name": "contains_null", "type": "boolean", "field-id": 509},
                        {"name": "contains_nan", "type": ["null", "boolean"], "default": null, "field-id": 518},
                        {"name": "lower_bound", "type": ["null", "bytes"], "default": null, "field-id": 510},
                        {"name": "upper_bound", "type": ["null", "bytes"], "default": null, "field-id": 511},
                    ]}}]},
            ]
        });
        Schema::parse(&json).map_err(|e| e.to_string())
    });
    parsed
        .as_ref()
        .map_err(|e| IcebergError::Avro { what: "the manifest list schema".into(), reason: e.clone() })
}

fn avro(what: &str) -> impl FnOnce(apache_avro::Error) -> IcebergError + '_ {
    move |e| IcebergError::Avro { what: what.to_string(), reason: e.to_string() }
}

fn opt_long(v: Option<i64>) -> Avro {
    match v {
        Some(v) => Avro::Union(1, Box::new(Avro::Long(v))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}

/// A manifest of `files` (one table, spec 0), as the bytes of its Avro file.
pub(crate) fn write_manifest(table: Table, files: &[DataFile]) -> Result<Vec<u8>, IcebergError> {
    let schema = entry_schema(table)?;
    let mut w = Writer::with_codec(&schema, Vec::new(), Codec::Deflate(Default::default()));
    let header = [
        ("schema", spec::schema(table).to_string()),
        ("schema-id", "0".to_string()),
        ("partition-spec", spec::partition_spec(table)["fields"].to_string()),
        ("partition-spec-id", "0".to_string()),
        ("format-version", "2".to_string()),
        ("content", "data".to_string()),
    ];
    for (k, v) in header {
        w.add_user_metadata(k.to_string(), v).map_err(avro("a manifest header"))?;
    }
    let part = spec::partition_name(table);
    for f in files {
        let hour = match f.hour {
            Some(h) => Avro::Union(1, Box::new(Avro::Int(h))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        let data_file = Avro::Record(vec![
            ("content".into(), Avro::Int(0)),
            ("file_path".into(), Avro::String(f.path.clone())),
            ("file_format".into(), Avro::String("PARQUET".into())),
            ("partition".into(), Avro::Record(vec![(part.clone(), hour)])),
            ("record_count".into(), Avro::Long(f.records)),
            ("file_size_in_bytes".into(), Avro::Long(f.bytes)),
        ]);
        let entry = Avro::Record(vec![
            ("status".into(), Avro::Int(f.status)),
            ("snapshot_id".into(), opt_long(f.snapshot_id)),
            ("sequence_number".into(), opt_long(f.sequence)),
            ("file_sequence_number".into(), opt_long(f.file_sequence)),
            ("data_file".into(), data_file),
        ]);
        w.append(entry).map_err(avro("a manifest entry"))?;
    }
    w.into_inner().map_err(avro("a manifest"))
}

/// A manifest list naming `manifests`, for snapshot `snapshot_id`.
pub(crate) fn write_list(
    manifests: &[ManifestFile],
    snapshot_id: i64,
    parent: Option<i64>,
    sequence: i64,
) -> Result<Vec<u8>, IcebergError> {
    let schema = list_schema()?;
    let mut w = Writer::with_codec(schema, Vec::new(), Codec::Deflate(Default::default()));
    let mut header = vec![
        ("snapshot-id", snapshot_id.to_string()),
        ("sequence-number", sequence.to_string()),
        ("format-version", "2".to_string()),
    ];
    if let Some(p) = parent {
        header.push(("parent-snapshot-id", p.to_string()));
    }
    for (k, v) in header {
        w.add_user_metadata(k.to_string(), v).map_err(avro("a manifest list header"))?;
    }
    for m in manifests {
        let partitions = match m.hours {
            Some((lo, hi)) => {
                let bound = |h: i32| Avro::Union(1, Box::new(Avro::Bytes(h.to_le_bytes().to_vec())));
                let summary = Avro::Record(vec![
                    ("contains_null".into(), Avro::Boolean(false)),
                    ("contains_nan".into(), Avro::Union(0, Box::new(Avro::Null))),
                    ("lower_bound".into(), bound(lo)),
                    ("upper_bound".into(), bound(hi)),
                ]);
                Avro::Union(1, Box::new(Avro::Array(vec![summary])))
            }
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        let record = Avro::Record(vec![
            ("manifest_path".into(), Avro::String(m.path.clone())),
            ("manifest_length".into(), Avro::Long(m.length)),
            ("partition_spec_id".into(), Avro::Int(0)),
            ("content".into(), Avro::Int(m.content)),
            ("sequence_number".into(), Avro::Long(m.sequence)),
            ("min_sequence_number".into(), Avro::Long(m.min_sequence)),
            ("added_snapshot_id".into(), Avro::Long(m.added_snapshot_id)),
            ("added_files_count".into(), Avro::Int(m.added_files)),
            ("existing_files_count".into(), Avro::Int(m.existing_files)),
            ("deleted_files_count".into(), Avro::Int(m.deleted_files)),
            ("added_rows_count".into(), Avro::Long(m.added_rows)),
            ("existing_rows_count".into(), Avro::Long(m.existing_rows)),
            ("deleted_rows_count".into(), Avro::Long(m.deleted_rows)),
            ("partitions".into(), partitions),
        ]);
        w.append(record).map_err(avro("a manifest list entry"))?;
    }
    w.into_inner().map_err(avro("a manifest list"))
}

/// A record's fields by name, with unions unwrapped.
fn fields(v: Avro) -> HashMap<String, Avro> {
    match v {
        Avro::Record(fields) => fields.into_iter().map(|(k, v)| (k, unwrap(v))).collect(),
        _ => HashMap::new(),
    }
}

fn unwrap(v: Avro) -> Avro {
    match v {
        Avro::Union(_, inner) => unwrap(*inner),
        v => v,
    }
}

fn long(v: Option<&Avro>) -> Option<i64> {
    match v? {
        Avro::Long(n) => Some(*n),
        Avro::Int(n) => Some(i64::from(*n)),
        _ => None,
    }
}

fn bound(v: Option<&Avro>) -> Option<i32> {
    match v? {
        Avro::Bytes(b) if b.len() == 4 => Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => None,
    }
}

/// The manifests a manifest list names.
pub(crate) fn read_list(bytes: &[u8], path: &str) -> Result<Vec<ManifestFile>, IcebergError> {
    let reader = Reader::new(bytes).map_err(avro(path))?;
    let mut out = Vec::new();
    for record in reader {
        let f = fields(record.map_err(avro(path))?);
        let text = |k: &str| match f.get(k) {
            Some(Avro::String(s)) => Some(s.clone()),
            _ => None,
        };
        let n = |k: &str| long(f.get(k)).unwrap_or(0);
        let hours = match f.get("partitions") {
            Some(Avro::Array(parts)) => parts.first().cloned().and_then(|p| {
                let p = fields(p);
                Some((bound(p.get("lower_bound"))?, bound(p.get("upper_bound"))?))
            }),
            _ => None,
        };
        let bad =
            || IcebergError::Avro { what: path.to_string(), reason: "a manifest without a path".into() };
        out.push(ManifestFile {
            path: text("manifest_path").ok_or_else(bad)?,
            length: n("manifest_length"),
            sequence: n("sequence_number"),
            min_sequence: n("min_sequence_number"),
            added_snapshot_id: n("added_snapshot_id"),
            added_files: n("added_files_count").max(n("added_data_files_count")) as i32,
            existing_files: n("existing_files_count").max(n("existing_data_files_count")) as i32,
            deleted_files: n("deleted_files_count").max(n("deleted_data_files_count")) as i32,
            added_rows: n("added_rows_count"),
            existing_rows: n("existing_rows_count"),
            deleted_rows: n("deleted_rows_count"),
            hours,
            content: n("content") as i32,
        });
    }
    Ok(out)
}

/// The entries of a manifest, deleted ones included (their status says so); sequence
/// numbers left to inherit are filled in from `manifest`.
pub(crate) fn read_manifest(bytes: &[u8], manifest: &ManifestFile) -> Result<Vec<DataFile>, IcebergError> {
    let path = manifest.path.as_str();
    let reader = Reader::new(bytes).map_err(avro(path))?;
    let mut out = Vec::new();
    for record in reader {
        let entry = fields(record.map_err(avro(path))?);
        let data = fields(entry.get("data_file").cloned().unwrap_or(Avro::Null));
        let Some(Avro::String(file)) = data.get("file_path") else {
            return Err(IcebergError::Avro {
                what: path.into(),
                reason: "an entry without a file_path".into(),
            });
        };
        let hour = match data.get("partition").cloned().map(fields) {
            Some(p) => p.into_values().find_map(|v| match v {
                Avro::Int(h) => Some(h),
                _ => None,
            }),
            None => None,
        };
        let status = long(entry.get("status")).unwrap_or(0) as i32;
        let inherit = |v: Option<i64>| v.or((status == ADDED).then_some(manifest.sequence));
        out.push(DataFile {
            path: file.clone(),
            hour,
            records: long(data.get("record_count")).unwrap_or(0),
            bytes: long(data.get("file_size_in_bytes")).unwrap_or(0),
            status,
            snapshot_id: long(entry.get("snapshot_id")).or(Some(manifest.added_snapshot_id)),
            sequence: inherit(long(entry.get("sequence_number"))),
            file_sequence: inherit(long(entry.get("file_sequence_number"))),
        });
    }
    Ok(out)
}

impl DataFile {
    /// Not deleted: part of the snapshot whose manifests list it.
    pub(crate) fn is_live(&self) -> bool {
        self.status != DELETED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_lists_read_back_what_was_written_with_field_ids_in_their_schema() {
        let file = DataFile {
            path: "file:///t/page_views/day=2020-01-01/hour=00/part-x.parquet".into(),
            hour: Some(438_288),
            records: 10,
            bytes: 1234,
            status: ADDED,
            snapshot_id: Some(7),
            sequence: None,
            file_sequence: None,
        };
        let bytes = write_manifest(Table::PageViews, std::slice::from_ref(&file)).unwrap();
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(4000)]).to_string();
        assert!(header.contains(r#""field-id":1000"#) && header.contains("timestamp_hour"), "{header}");
        let manifest = ManifestFile {
            path: "m.avro".into(),
            length: bytes.len() as i64,
            sequence: 3,
            min_sequence: 3,
            added_snapshot_id: 7,
            added_files: 1,
            existing_files: 0,
            deleted_files: 0,
            added_rows: 10,
            existing_rows: 0,
            deleted_rows: 0,
            hours: Some((438_288, 438_288)),
            content: 0,
        };
        let read = read_manifest(&bytes, &manifest).unwrap();
        assert_eq!(read, vec![DataFile { sequence: Some(3), file_sequence: Some(3), ..file }]);
        let list = write_list(std::slice::from_ref(&manifest), 7, None, 3).unwrap();
        assert_eq!(read_list(&list, "l").unwrap(), vec![manifest]);
    }
}
