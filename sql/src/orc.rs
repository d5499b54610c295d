//! ORC tables: DataFusion's listing tables over `.orc` files, read by orc-rust.
//!
//! datafusion-orc's `OrcFormat` is the model: the same crates (orc-rust 0.9 on arrow 59,
//! DataFusion 55), the same file-format hooks. What differs is the file source. DataFusion 55
//! leaves projection and partition columns to each source (its JSON and CSV sources wrap their
//! openers in a `ProjectionOpener`); datafusion-orc 0.10's opener hands back the file's
//! columns only, so `day` and `hour` would be missing and a projection in another order than
//! the file's would be misread. And it reads timestamps as nanoseconds, which cover
//! 1677–2262 only, where the tables hold years 0000–9999 and declare milliseconds. So the
//! opener here asks orc-rust for exactly the declared file columns, timestamps in
//! milliseconds, and the `ProjectionOpener` adds the partition values, as for JSON lines.
//!
//! A file is read through [`ObjectStoreReader`] with the size DataFusion listed, so an open
//! file of the committed view ([`crate::committed`]) is read only up to its committed length.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExprs;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use orc_rust::projection::ProjectionMask;
use orc_rust::reader::AsyncChunkReader;
use orc_rust::ArrowReaderBuilder;

/// How DataFusion reads the pipeline's ORC files. The tables' schemas are declared by the
/// catalog, so nothing is inferred from the files.
#[derive(Debug, Default)]
pub(crate) struct OrcTables;

#[async_trait]
impl FileFormat for OrcTables {
    fn get_ext(&self) -> String {
        "orc".to_string()
    }

    fn get_ext_with_compression(&self, _compression: &FileCompressionType) -> Result<String> {
        Ok(self.get_ext())
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        _objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        Err(DataFusionError::NotImplemented(
            "pageviews' ORC tables declare their schemas; none is inferred".into(),
        ))
    }

    async fn infer_stats(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        _object: &ObjectMeta,
    ) -> Result<Statistics> {
        Ok(Statistics::new_unknown(&table_schema))
    }

    async fn create_physical_plan(
        &self,
        _state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(DataSourceExec::from_data_source(conf))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(OrcSource::new(table_schema))
    }
}

/// The scan of one ORC table: which columns, how many rows a batch.
#[derive(Clone)]
struct OrcSource {
    table_schema: TableSchema,
    projection: SplitProjection,
    batch_size: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl OrcSource {
    fn new(table_schema: TableSchema) -> Self {
        OrcSource {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            batch_size: 8192,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl FileSource for OrcSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        let columns = Arc::new(file_schema.project(&self.projection.file_indices)?);
        let opener = Arc::new(OrcOpener {
            store: object_store,
            columns,
            batch_size: config.batch_size.unwrap_or(self.batch_size),
        });
        ProjectionOpener::try_new(self.projection.clone(), opener, file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(OrcSource { batch_size, ..self.clone() })
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "orc"
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        let merged = self.projection.source.try_merge(projection)?;
        let projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(OrcSource { projection, ..self.clone() })))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }
}

/// Opens one file and reads `columns` (file columns, in the projection's order) from it.
struct OrcOpener {
    store: Arc<dyn ObjectStore>,
    columns: SchemaRef,
    batch_size: usize,
}

impl FileOpener for OrcOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let reader = ObjectStoreReader { store: self.store.clone(), file: file.object_meta.clone() };
        let (columns, batch_size, range) = (self.columns.clone(), self.batch_size, file.range.clone());
        Ok(async move {
            let mut builder = ArrowReaderBuilder::try_new_async(reader).await.map_err(ArrowError::from)?;
            let root = builder.file_metadata().root_data_type();
            let wanted: Vec<usize> = columns
                .fields()
                .iter()
                .filter_map(|f| root.children().iter().find(|c| c.name() == f.name()))
                .map(|c| c.data_type().column_index())
                .collect();
            let mask = ProjectionMask::roots(root, wanted);
            if let Some(range) = range {
                // A split of a large file: the stripes that start in it.
                let (start, end) = (usize::try_from(range.start), usize::try_from(range.end));
                if let (Ok(start), Ok(end)) = (start, end) {
                    builder = builder.with_file_byte_range(start..end);
                }
            }
            // The declared columns: timestamps in milliseconds, in the projection's order.
            let stream =
                builder.with_projection(mask).with_schema(columns).with_batch_size(batch_size).build_async();
            Ok(stream.map_err(DataFusionError::from).boxed())
        }
        .boxed())
    }
}

/// orc-rust's reads, served by the object store in ranges.
struct ObjectStoreReader {
    store: Arc<dyn ObjectStore>,
    file: ObjectMeta,
}

impl fmt::Debug for ObjectStoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreReader").field("file", &self.file.location).finish()
    }
}

impl AsyncChunkReader for ObjectStoreReader {
    fn len(&mut self) -> BoxFuture<'_, std::io::Result<u64>> {
        // The listed size: for an open file, its committed length.
        let size = self.file.size;
        async move { Ok(size) }.boxed()
    }

    fn get_bytes(&mut self, offset_from_start: u64, length: u64) -> BoxFuture<'_, std::io::Result<Bytes>> {
        let range = offset_from_start..offset_from_start.saturating_add(length);
        self.store.get_range(&self.file.location, range).map_err(std::io::Error::from).boxed()
    }
}
