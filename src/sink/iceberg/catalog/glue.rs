//! AWS Glue as an Iceberg catalog, the way Iceberg's own `GlueCatalog` keeps tables: a Glue
//! table per Iceberg table, with `table_type=ICEBERG` and `metadata_location` naming the
//! current metadata file among its parameters. A commit is `UpdateTable` naming the
//! `VersionId` the change was built on, which Glue refuses once another update landed
//! (`ConcurrentModificationException`). Requests are Glue's JSON API, signed with SigV4 from
//! the `AWS_*` settings S3 is configured with; `AWS_ENDPOINT_URL` points at another server.

use pageviews_core::storage::StoreEnv;
use pageviews_core::table::Table;
use reqwest::Client;
use ring::{digest, hmac};
use serde_json::{json, Value};

use super::super::{spec, IcebergError};
use super::Loaded;

pub(crate) struct GlueCatalog {
    client: Client,
    endpoint: String,
    host: String,
    region: String,
    key: String,
    secret: String,
    token: Option<String>,
    catalog_id: Option<String>,
    database: String,
}

impl GlueCatalog {
    pub(crate) fn new(
        catalog_id: &str,
        namespace: &str,
        env: &StoreEnv,
    ) -> Result<GlueCatalog, IcebergError> {
        let var = |k: &str| env.vars().iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let region =
            var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        let endpoint = var("AWS_ENDPOINT_URL_GLUE")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host =
            endpoint.split("://").nth(1).unwrap_or(&endpoint).split('/').next().unwrap_or("").to_string();
        let missing =
            |k: &str| IcebergError::Config(format!("glue:// needs {k} (the AWS credentials S3 uses)"));
        let key = var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret = var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        let token = var("AWS_SESSION_TOKEN");
        pageviews_core::secrets::register_option("AWS_SECRET_ACCESS_KEY", &secret);
        if let Some(t) = &token {
            pageviews_core::secrets::register_option("AWS_SESSION_TOKEN", t);
        }
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| IcebergError::Config(format!("building the HTTP client for Glue: {e}")))?;
        Ok(GlueCatalog {
            client,
            endpoint,
            host,
            region,
            key,
            secret,
            token,
            catalog_id: Some(catalog_id.to_string()).filter(|c| !c.is_empty()),
            database: namespace.to_string(),
        })
    }

    pub(crate) fn describe(&self) -> String {
        match &self.catalog_id {
            Some(id) => format!("glue://{id} at {}", self.endpoint),
            None => format!("glue:// at {}", self.endpoint),
        }
    }

    /// Calls Glue's `action` with `body` (the catalog id added); the answer, or the error's
    /// `__type` and message.
    async fn call(
        &self,
        action: &str,
        mut body: Value,
    ) -> Result<Result<Value, (String, String)>, IcebergError> {
        if let (Some(id), Some(obj)) = (&self.catalog_id, body.as_object_mut()) {
            obj.insert("CatalogId".into(), json!(id));
        }
        let payload = body.to_string();
        let now = chrono_now();
        let headers = self.sign(action, &payload, &now);
        let mut request = self.client.post(format!("{}/", self.endpoint)).body(payload);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let failed = |e: reqwest::Error| IcebergError::Catalog {
            catalog: self.describe(),
            reason: format!("{action}: {e}"),
            transient: true,
        };
        let answer = request.send().await.map_err(failed)?;
        let status = answer.status();
        let text = answer.text().await.map_err(failed)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(value));
        }
        let kind = value
            .get("__type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .rsplit('#')
            .next()
            .unwrap_or("")
            .to_string();
        let message = value
            .get("message")
            .or(value.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or(&text)
            .to_string();
        if status.is_server_error() || kind == "ThrottlingException" {
            return Err(IcebergError::Catalog {
                catalog: self.describe(),
                reason: format!("{action}: {kind} {message}"),
                transient: true,
            });
        }
        Ok(Err((kind, message)))
    }

    fn refused(&self, action: &str, (kind, message): (String, String)) -> IcebergError {
        IcebergError::Catalog {
            catalog: self.describe(),
            reason: format!("{action}: {kind}: {message}"),
            transient: false,
        }
    }

    pub(crate) async fn ensure_namespace(&self) -> Result<(), IcebergError> {
        let input = json!({"DatabaseInput": {"Name": self.database}});
        match self.call("CreateDatabase", input).await? {
            Ok(_) => Ok(()),
            Err((kind, _)) if kind == "AlreadyExistsException" => Ok(()),
            Err(e) => Err(self.refused("CreateDatabase", e)),
        }
    }

    /// The table's metadata location and `VersionId`.
    pub(crate) async fn get(&self, table: &str) -> Result<Option<(String, String)>, IcebergError> {
        let body = json!({"DatabaseName": self.database, "Name": table});
        let answer = match self.call("GetTable", body).await? {
            Ok(a) => a,
            Err((kind, _)) if kind == "EntityNotFoundException" => return Ok(None),
            Err(e) => return Err(self.refused("GetTable", e)),
        };
        let t = &answer["Table"];
        let at = t["Parameters"]["metadata_location"].as_str().ok_or_else(|| IcebergError::Catalog {
            catalog: self.describe(),
            reason: format!(
                "Glue table {}.{table} has no metadata_location: it is not an Iceberg table",
                self.database
            ),
            transient: false,
        })?;
        let version = t["VersionId"].as_str().unwrap_or("").to_string();
        Ok(Some((at.to_string(), version)))
    }

    fn input(&self, table: Table, location: &str, at: &str, previous: Option<&str>) -> Value {
        let mut parameters = json!({"table_type": "ICEBERG", "metadata_location": at});
        if let Some(p) = previous {
            parameters["previous_metadata_location"] = json!(p);
        }
        json!({
            "Name": table.name(),
            "TableType": "EXTERNAL_TABLE",
            "Parameters": parameters,
            "StorageDescriptor": {"Location": location, "Columns": spec::glue_columns(table)},
        })
    }

    /// Creates the table; false when it exists already.
    pub(crate) async fn create(&self, table: Table, location: &str, at: &str) -> Result<bool, IcebergError> {
        let body =
            json!({"DatabaseName": self.database, "TableInput": self.input(table, location, at, None)});
        match self.call("CreateTable", body).await? {
            Ok(_) => Ok(true),
            Err((kind, _)) if kind == "AlreadyExistsException" => Ok(false),
            Err(e) => Err(self.refused("CreateTable", e)),
        }
    }

    /// Points the table at `at` if it is still at `base`.
    pub(crate) async fn swap(&self, table: Table, base: &Loaded, at: &str) -> Result<bool, IcebergError> {
        // Glue's VersionId is the compare-and-swap; reading the location again first also
        // catches a stale base on servers that do not check it (moto).
        match self.get(table.name()).await? {
            Some((now, _)) if Some(now.as_str()) == base.location.as_deref() => {}
            _ => return Ok(false),
        }
        let location = base.metadata.location().unwrap_or_default();
        let mut body = json!({"DatabaseName": self.database, "TableInput": self.input(table, location, at, base.location.as_deref())});
        if let Some(v) = base.version_id.as_ref().filter(|v| !v.is_empty()) {
            body["VersionId"] = json!(v);
        }
        match self.call("UpdateTable", body).await? {
            Ok(_) => Ok(true),
            Err((kind, _)) if kind == "ConcurrentModificationException" => Ok(false),
            Err(e) => Err(self.refused("UpdateTable", e)),
        }
    }

    /// SigV4 headers for a Glue JSON call.
    fn sign(&self, action: &str, payload: &str, (date, stamp): &(String, String)) -> Vec<(String, String)> {
        let hash = hex(digest::digest(&digest::SHA256, payload.as_bytes()).as_ref());
        let target = format!("AWSGlue.{action}");
        let content_type = "application/x-amz-json-1.1";
        let mut headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), hash.clone()),
            ("x-amz-date".to_string(), stamp.clone()),
        ];
        if let Some(t) = &self.token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        headers.push(("x-amz-target".to_string(), target));
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        let request = format!("POST\n/\n\n{canonical_headers}\n{signed}\n{hash}");
        let scope = format!("{date}/{}/glue/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, request.as_bytes()).as_ref())
        );
        let mac =
            |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
        let k = mac(format!("AWS4{}", self.secret).as_bytes(), date);
        let k = mac(k.as_ref(), &self.region);
        let k = mac(k.as_ref(), "glue");
        let k = mac(k.as_ref(), "aws4_request");
        let signature = hex(mac(k.as_ref(), &to_sign).as_ref());
        headers.push((
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                self.key
            ),
        ));
        headers.retain(|(k, _)| k != "host");
        headers
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The date (`YYYYMMDD`) and time stamp (`YYYYMMDDTHHMMSSZ`) of now, UTC, as SigV4 wants them.
fn chrono_now() -> (String, String) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // `yyyy-MM-dd HH:mm:ss.SSS`
    let text = pageviews_core::time::format_timestamp(ms);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = (&digits[..8.min(digits.len())], &digits[8.min(digits.len())..14.min(digits.len())]);
    (date.to_string(), format!("{date}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_signed_as_aws_documents_sigv4() {
        // AWS's published example key, with a fixed clock: the signature depends only on them.
        let env = StoreEnv::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            ("AWS_REGION", "us-east-1"),
        ]);
        let glue = GlueCatalog::new("", "db", &env).unwrap();
        let stamp = ("20150830".to_string(), "20150830T123600Z".to_string());
        let headers = glue.sign("GetTable", "{}", &stamp);
        let auth = &headers.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/glue/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target, Signature="), "{auth}");
        assert_eq!(glue.sign("GetTable", "{}", &stamp), headers, "deterministic");
        assert_eq!(chrono_now().1.len(), 16);
    }
}
