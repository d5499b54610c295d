//! Counting the requests an object store is sent, by kind: what a deployment's store bills
//! (S3 prices PUT, COPY, POST and LIST requests alike, GET and HEAD at a tenth of that) and
//! what its per-prefix rate limits count. Counted at the HTTP client, so object_store's own
//! retries and every page of a listing count once each, as the store counts them. A root
//! on local disk sends none.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

use super::retry::NoObserver;
use super::StorageObserver;

/// A kind of request to an object store, told from its method and query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageRequest {
    /// A whole object written (PutObject, Put Blob, CopyObject): log entries, tails, markers.
    Put,
    /// CreateMultipartUpload.
    CreateUpload,
    /// A part of an upload (UploadPart, Put Block).
    UploadPart,
    /// An upload completed (CompleteMultipartUpload, Put Block List).
    CompleteUpload,
    /// An upload abandoned (AbortMultipartUpload).
    AbortUpload,
    /// An object read, whole or a range.
    Get,
    /// An object's metadata (HEAD).
    Head,
    /// One page of a listing: objects, or unfinished uploads.
    List,
    /// An object deleted (one, or a batch).
    Delete,
    /// Anything else.
    Other,
}

impl StorageRequest {
    /// Every kind, for metrics that show each from the start.
    pub const ALL: [StorageRequest; 10] = [
        StorageRequest::Put,
        StorageRequest::CreateUpload,
        StorageRequest::UploadPart,
        StorageRequest::CompleteUpload,
        StorageRequest::AbortUpload,
        StorageRequest::Get,
        StorageRequest::Head,
        StorageRequest::List,
        StorageRequest::Delete,
        StorageRequest::Other,
    ];

    /// The label value, e.g. `upload_part`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageRequest::Put => "put",
            StorageRequest::CreateUpload => "create_upload",
            StorageRequest::UploadPart => "upload_part",
            StorageRequest::CompleteUpload => "complete_upload",
            StorageRequest::AbortUpload => "abort_upload",
            StorageRequest::Get => "get",
            StorageRequest::Head => "head",
            StorageRequest::List => "list",
            StorageRequest::Delete => "delete",
            StorageRequest::Other => "other",
        }
    }

    /// The kind of an S3 or Azure Blob request, from its HTTP method and query string.
    pub(crate) fn of(method: &str, query: Option<&str>) -> StorageRequest {
        // Every request passes here: read the query in place, allocating nothing.
        let params = || query.unwrap_or("").split('&');
        let has = |key: &str| params().any(|p| p.split('=').next() == Some(key));
        let comp = |value: &str| params().any(|p| p.strip_prefix("comp=") == Some(value));
        match method {
            "GET" if has("list-type") || has("uploads") || comp("list") => StorageRequest::List,
            "GET" => StorageRequest::Get,
            "HEAD" => StorageRequest::Head,
            "PUT" if has("partNumber") || comp("block") => StorageRequest::UploadPart,
            "PUT" if comp("blocklist") => StorageRequest::CompleteUpload,
            "PUT" => StorageRequest::Put,
            "POST" if has("uploadId") => StorageRequest::CompleteUpload,
            "POST" if has("uploads") => StorageRequest::CreateUpload,
            "POST" if has("delete") => StorageRequest::Delete,
            "DELETE" if has("uploadId") => StorageRequest::AbortUpload,
            "DELETE" => StorageRequest::Delete,
            _ => StorageRequest::Other,
        }
    }
}

/// Where a root's clients report their requests: set once the pipeline's metrics are
/// known ([`super::Storage::with_observer`]), after the clients were built.
#[derive(Clone)]
pub(crate) struct ObserverSlot(Arc<RwLock<Arc<dyn StorageObserver>>>);

impl Default for ObserverSlot {
    fn default() -> Self {
        ObserverSlot(Arc::new(RwLock::new(Arc::new(NoObserver))))
    }
}

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverSlot")
    }
}

impl ObserverSlot {
    pub(crate) fn get(&self) -> Arc<dyn StorageObserver> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, observer: Arc<dyn StorageObserver>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = observer;
    }

    fn request(&self, kind: StorageRequest) {
        self.0.read().unwrap_or_else(|p| p.into_inner()).request(kind);
    }
}

/// object_store's reqwest client, counting each request into an [`ObserverSlot`].
#[derive(Debug, Clone, Default)]
pub(crate) struct CountingConnector {
    slot: ObserverSlot,
}

impl CountingConnector {
    pub(crate) fn new(slot: ObserverSlot) -> Self {
        CountingConnector { slot }
    }
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting { inner, slot: self.slot.clone() }))
    }
}

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    slot: ObserverSlot,
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>>;

// Written out rather than through `#[async_trait]`, which this crate does not otherwise need.
impl HttpService for Counting {
    fn call<'s, 'a>(&'s self, req: HttpRequest) -> Answer<'a>
    where
        's: 'a,
        Self: 'a,
    {
        self.slot.request(StorageRequest::of(req.method().as_str(), req.uri().query()));
        let inner = self.inner.clone();
        Box::pin(async move { inner.execute(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::StorageRequest::{self, *};

    #[test]
    fn requests_are_told_apart_by_method_and_query_as_s3_and_azure_send_them() {
        let cases: [(&str, Option<&str>, StorageRequest); 16] = [
            ("PUT", None, Put),
            ("PUT", Some("partNumber=2&uploadId=abc"), UploadPart),
            ("PUT", Some("comp=block&blockid=AAA"), UploadPart),
            ("PUT", Some("comp=blocklist"), CompleteUpload),
            ("POST", Some("uploads"), CreateUpload),
            ("POST", Some("uploads="), CreateUpload),
            ("POST", Some("uploadId=abc"), CompleteUpload),
            ("POST", Some("delete"), Delete),
            ("DELETE", Some("uploadId=abc"), AbortUpload),
            ("DELETE", None, Delete),
            ("GET", None, Get),
            ("GET", Some("list-type=2&prefix=a%2F"), List),
            ("GET", Some("prefix=a%2F&uploads="), List),
            ("GET", Some("restype=container&comp=list&prefix=a"), List),
            ("HEAD", None, Head),
            ("OPTIONS", None, Other),
        ];
        for (method, query, want) in cases {
            assert_eq!(StorageRequest::of(method, query), want, "{method} ?{query:?}");
        }
    }
}
