//! ListMultipartUploads: the one S3 call object_store does not offer, signed with its own
//! credentials and signer. Recovery uses it to find the uploads a crash left behind.

use object_store::aws::AwsAuthorizer;
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path;
use object_store::ClientOptions;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::retry::HttpStatus;
use super::s3::S3Client;
use super::{ObjectRoot, StorageError, UploadRef};

/// SigV4 canonicalises query values with everything but the unreserved characters encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// One page of the answer; unknown elements are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<Upload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
}

/// Unfinished uploads whose keys start with `prefix/` (relative to the table root).
pub(super) async fn list(
    client: &S3Client,
    root: &ObjectRoot,
    prefix: &Path,
) -> Result<Vec<UploadRef>, StorageError> {
    let err = |reason: String| StorageError::Store {
        op: "list uploads",
        path: prefix.to_string(),
        source: object_store::Error::Generic { store: "S3", source: reason.into() },
    };
    let http: HttpClient = client
        .connector
        .connect(&ClientOptions::new().with_allow_http(client.allow_http))
        .map_err(|e| err(e.to_string()))?;
    let key_prefix = format!("{}/", root.key(prefix));
    let root_len = if root.prefix.as_ref().is_empty() { 0 } else { root.prefix.as_ref().len() + 1 };
    let credential = client.s3.credentials().get_credential().await.map_err(|e| err(e.to_string()))?;
    let encode = |s: &str| utf8_percent_encode(s, QUERY_VALUE).to_string();
    let mut out = Vec::new();
    let mut markers: Option<(String, String)> = None;
    loop {
        let mut url = format!("{}/?prefix={}&uploads=", client.bucket_url, encode(&key_prefix));
        if let Some((key, id)) = &markers {
            url.push_str(&format!("&key-marker={}&upload-id-marker={}", encode(key), encode(id)));
        }
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(&url)
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| err(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &client.region).authorize(&mut request, None);
        // Keep the transport error and the status typed: they tell a passing failure
        // (retried by the caller) from an answer.
        let store_err = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Store {
            op: "list uploads",
            path: prefix.to_string(),
            source: object_store::Error::Generic { store: "S3", source },
        };
        let response = http.execute(request).await.map_err(|e| store_err(Box::new(e)))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| store_err(Box::new(e)))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == http::StatusCode::NOT_IMPLEMENTED || body.contains("<Code>NotImplemented</Code>") {
            return Err(StorageError::Unsupported {
                what: "ListMultipartUploads",
                reason: format!("HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(store_err(Box::new(HttpStatus { status: status.as_u16(), body })));
        }
        let page = parse_page(&body).map_err(err)?;
        for upload in page.uploads {
            if let Some(rel) = upload.key.get(root_len..) {
                out.push(UploadRef { path: rel.to_string(), id: upload.upload_id, staged: String::new() });
            }
        }
        match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
            (true, Some(k), Some(i)) => markers = Some((k, i)),
            _ => return Ok(out),
        }
    }
}

fn parse_page(xml: &str) -> Result<ListPage, String> {
    quick_xml::de::from_str(xml).map_err(|e| format!("unreadable ListMultipartUploads answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gives_its_uploads_and_where_the_next_page_starts() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>pv/page_views/a &amp; b.jsonl</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>pv/page_views/x.jsonl</Key><UploadId>id-1</UploadId>
    <Initiator><ID>i</ID></Initiator><StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>pv/page_views/a &amp; b.jsonl</Key><UploadId>id-2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_page(xml).unwrap();
        assert!(page.is_truncated);
        let keys: Vec<_> = page.uploads.iter().map(|u| (u.key.as_str(), u.upload_id.as_str())).collect();
        assert_eq!(keys, [("pv/page_views/x.jsonl", "id-1"), ("pv/page_views/a & b.jsonl", "id-2")]);
        assert_eq!(page.next_key_marker.as_deref(), Some("pv/page_views/a & b.jsonl"));
        let last = parse_page(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(!last.is_truncated && last.uploads.is_empty());
    }

    #[test]
    fn query_values_are_encoded_as_sigv4_canonicalises_them() {
        let enc = utf8_percent_encode("pv/a b~_.-é", QUERY_VALUE).to_string();
        assert_eq!(enc, "pv%2Fa%20b~_.-%C3%A9");
    }
}
