//! The Iceberg REST catalog protocol: the server holds the tables and writes their metadata
//! files; a commit sends the changes with requirements (the table's uuid, and that `main`
//! is still at the snapshot the change was built on), and a server that finds one unmet
//! answers 409. Authentication: a bearer token, or OAuth2 client credentials exchanged at
//! the server's token endpoint.

use pageviews_core::table::Table;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use super::super::metadata::Metadata;
use super::super::{spec, IcebergConfig, IcebergError};
use super::{Change, Loaded, Outcome};

pub(crate) struct RestCatalog {
    client: Client,
    uri: String,
    /// `{uri}/v1/{prefix}`: where the namespace and table routes hang.
    base: String,
    namespace: Vec<String>,
    token: Option<String>,
}

fn failed(uri: &str, what: &str, reason: impl std::fmt::Display, transient: bool) -> IcebergError {
    IcebergError::Catalog { catalog: uri.to_string(), reason: format!("{what}: {reason}"), transient }
}

impl RestCatalog {
    pub(crate) async fn connect(config: &IcebergConfig) -> Result<RestCatalog, IcebergError> {
        let uri = config.catalog.trim_end_matches('/').to_string();
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| failed(&uri, "building the HTTP client", e, false))?;
        let mut catalog = RestCatalog {
            client,
            base: format!("{uri}/v1"),
            uri,
            namespace: config.namespace.split('.').map(str::to_string).collect(),
            token: config.token.clone(),
        };
        if let (None, Some(credential)) = (&catalog.token, &config.credential) {
            catalog.token = Some(catalog.oauth_token(credential).await?);
        }
        let mut url = format!("{}/v1/config", catalog.uri);
        if let Some(w) = &config.warehouse {
            url = format!("{url}?warehouse={}", encode(w));
        }
        let answer = catalog.send(catalog.request(Method::GET, &url), "reading the catalog's config").await?;
        let prefix = ["overrides", "defaults"]
            .iter()
            .find_map(|k| answer.get(*k)?.get("prefix")?.as_str().map(str::to_string));
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            catalog.base = format!("{}/v1/{}", catalog.uri, prefix.trim_matches('/'));
        }
        Ok(catalog)
    }

    pub(crate) fn describe(&self) -> String {
        self.uri.clone()
    }

    /// Client credentials (`ID:SECRET`) for a bearer token, at the server's token endpoint.
    async fn oauth_token(&self, credential: &str) -> Result<String, IcebergError> {
        let (id, secret) = credential.split_once(':').unwrap_or(("", credential));
        let url = format!("{}/v1/oauth/tokens", self.uri);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "catalog"),
        ];
        let body = form.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&");
        let request =
            self.client.post(&url).header("Content-Type", "application/x-www-form-urlencoded").body(body);
        let answer = self.send(request, "exchanging the OAuth2 client credentials").await?;
        answer
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| failed(&self.uri, "the token endpoint's answer", "no access_token", false))
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let r = self.client.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn table_url(&self, table: &str) -> String {
        format!(
            "{}/namespaces/{}/tables/{table}",
            self.base,
            self.namespace.join("\u{1f}").replace('\u{1f}', "%1F")
        )
    }

    /// Sends and reads a JSON answer; an error status is an error naming it.
    async fn send(&self, r: RequestBuilder, what: &str) -> Result<Value, IcebergError> {
        let (status, body) = self.exchange(r, what).await?;
        if !status.is_success() {
            return Err(status_error(&self.uri, what, status, &body));
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn exchange(&self, r: RequestBuilder, what: &str) -> Result<(StatusCode, String), IcebergError> {
        let answer = r.send().await.map_err(|e| failed(&self.uri, what, e, true))?;
        let status = answer.status();
        let body = answer.text().await.map_err(|e| failed(&self.uri, what, e, true))?;
        Ok((status, body))
    }

    pub(crate) async fn ensure_namespace(&self) -> Result<(), IcebergError> {
        let url = format!("{}/namespaces", self.base);
        let body = json!({"namespace": self.namespace, "properties": {}});
        let (status, text) =
            self.exchange(self.request(Method::POST, &url).json(&body), "creating the namespace").await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        // Two writers creating it at once: some servers (Iceberg's own, on a JDBC store)
        // answer the loser with a 500 for the violated key, not a 409. Made is made.
        let at = format!("{}/namespaces/{}", self.base, self.namespace.join("%1F"));
        let (exists, _) = self.exchange(self.request(Method::GET, &at), "loading the namespace").await?;
        if exists.is_success() {
            return Ok(());
        }
        Err(status_error(&self.uri, "creating the namespace", status, &text))
    }

    pub(crate) async fn load(&self, table: &str) -> Result<Option<Loaded>, IcebergError> {
        let what = format!("loading table {table}");
        let (status, body) = self.exchange(self.request(Method::GET, &self.table_url(table)), &what).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(&self.uri, &what, status, &body));
        }
        let answer: Value = serde_json::from_str(&body).map_err(|e| failed(&self.uri, &what, e, false))?;
        let location = answer.get("metadata-location").and_then(Value::as_str).map(str::to_string);
        let metadata = answer.get("metadata").cloned().unwrap_or(Value::Null);
        Ok(Some(Loaded { metadata: Metadata(metadata), location, version_id: None }))
    }

    pub(crate) async fn create(&self, table: Table, location: &str) -> Result<(), IcebergError> {
        let url = format!("{}/namespaces/{}/tables", self.base, self.namespace.join("%1F"));
        let body = json!({
            "name": table.name(),
            "location": location,
            "schema": spec::schema(table),
            "partition-spec": spec::partition_spec(table),
            "write-order": {"order-id": 0, "fields": []},
            "stage-create": false,
            "properties": spec::properties(),
        });
        let what = format!("creating table {}", table.name());
        let (status, text) = self.exchange(self.request(Method::POST, &url).json(&body), &what).await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        // As for the namespace: another writer's create may have won with a 500 to us.
        if self.load(table.name()).await?.is_some() {
            return Ok(());
        }
        Err(status_error(&self.uri, &what, status, &text))
    }

    pub(crate) async fn commit(&self, table: &str, change: &Change<'_>) -> Result<Outcome, IcebergError> {
        let base = &change.base.metadata;
        let id = change.snapshot.get("snapshot-id").cloned().unwrap_or(Value::Null);
        let mut updates = vec![
            json!({"action": "add-snapshot", "snapshot": change.snapshot}),
            json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id}),
            json!({"action": "set-properties", "updates": change.properties}),
        ];
        if !change.remove.is_empty() {
            updates.push(json!({"action": "remove-snapshots", "snapshot-ids": change.remove}));
        }
        let body = json!({
            "requirements": [
                {"type": "assert-table-uuid", "uuid": base.uuid()},
                {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": base.current_snapshot_id()},
            ],
            "updates": updates,
        });
        let what = format!("committing to table {table}");
        let (status, text) =
            self.exchange(self.request(Method::POST, &self.table_url(table)).json(&body), &what).await?;
        match status {
            s if s.is_success() => Ok(Outcome::Committed { dropped: Vec::new() }),
            StatusCode::CONFLICT => Ok(Outcome::Conflict),
            s => Err(status_error(&self.uri, &what, s, &text)),
        }
    }
}

fn status_error(uri: &str, what: &str, status: StatusCode, body: &str) -> IcebergError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            "; check PAGEVIEWS_CATALOG_TOKEN or PAGEVIEWS_CATALOG_CREDENTIAL"
        }
        _ => "",
    };
    failed(uri, what, format!("HTTP {status}: {message}{hint}"), transient)
}

/// Percent-encodes a query or form value.
fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}
