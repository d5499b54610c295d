//! The Azure Blob Storage client of an `az://container/prefix` root (also `abfs://` and
//! `abfss://`, as object_store parses them), configured the usual way from `AZURE_*`
//! settings, and the checks that refuse settings which cannot work before any request.
//!
//! How the protocol maps onto Blob Storage (`super::upload`): a file is a block blob whose
//! blocks are staged with Put Block and committed, whole and in one step, by Put Block List.
//! Staged blocks belong to the blob's name, not to a process, so a file spans checkpoints
//! and restarts as on S3. Blocks no checkpoint needs cannot be listed or aborted through
//! object_store; Azure drops uncommitted blocks 7 days after the blob's last Put Block or Put
//! Block List, and file names are never reused, so none is ever committed by mistake.

use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::{ClientConfigKey, RetryConfig};

use super::requests::CountingConnector;
use super::root::{bad, Location, StoreEnv};
use super::StorageError;

/// What to set for an Azure root, shown with every Azure configuration error.
pub(crate) const AZURE_SETTINGS: &str = "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or \
     AZURE_STORAGE_SAS_KEY, or a service principal: AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID), \
     and for Azurite AZURE_STORAGE_USE_EMULATOR=true";

/// Parses `az://container/prefix`, `abfs[s]://container/prefix` and
/// `abfs[s]://container@account.dfs.core.windows.net/prefix` (`rest` follows `scheme://`).
pub(super) fn parse_location(url: &str, scheme: &str, rest: &str) -> Result<Location, StorageError> {
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let (container, account) = match authority.split_once('@') {
        None => (authority, None),
        Some((container, host)) => {
            let account = host
                .strip_suffix(".dfs.core.windows.net")
                .or_else(|| host.strip_suffix(".blob.core.windows.net"))
                .filter(|a| !a.is_empty() && !a.contains('.'))
                .ok_or_else(|| {
                    bad(
                        url,
                        format!(
                            "{host} is not an Azure storage account's host (ACCOUNT.dfs.core.windows.net)"
                        ),
                    )
                })?;
            (container, Some(account.to_string()))
        }
    };
    // Container names are 3-63 lowercase letters, digits and hyphens; a dot means a host.
    if container.is_empty() || container.contains('.') {
        return Err(bad(url, format!("no container: write {scheme}://container/prefix")));
    }
    Ok(Location::Azure {
        container: container.to_string(),
        account,
        prefix: prefix.trim_matches('/').to_string(),
        store_url: format!("{scheme}://{authority}"),
    })
}

/// The container and, when the URL names it, the account of an Azure root.
pub(super) struct AzureSettings<'a> {
    pub(super) container: &'a str,
    pub(super) account: Option<&'a str>,
}

/// Builds the client for the container from `env`, refusing settings that cannot work: no
/// account, half a service principal, no credentials for an endpoint that is not Azure's
/// (none of Azure's managed identities there), or a plain-http endpoint not allowed.
pub(super) fn build(
    url: &str,
    root: &AzureSettings<'_>,
    env: &StoreEnv,
    retry: RetryConfig,
    connector: CountingConnector,
) -> Result<MicrosoftAzure, StorageError> {
    let mut builder = MicrosoftAzureBuilder::new();
    for (key, value) in env.with_prefix("AZURE_") {
        if let Ok(config_key) = key.to_ascii_lowercase().parse::<AzureConfigKey>() {
            builder = builder.with_config(config_key, value);
        }
    }
    builder = builder.with_container_name(root.container).with_retry(retry).with_http_connector(connector);
    if let Some(account) = root.account {
        builder = builder.with_account(account);
    }
    let get = |key: AzureConfigKey| builder.get_config_value(&key).filter(|v| !v.is_empty());
    let is_true = |key: AzureConfigKey| get(key).is_some_and(|v| v == "true");
    // Azurite: object_store supplies its well-known account and key and its address
    // (AZURITE_BLOB_STORAGE_URL, default http://127.0.0.1:10000).
    if !is_true(AzureConfigKey::UseEmulator) {
        check(url, &get, &is_true)?;
    }
    builder.build().map_err(|e| bad(url, format!("{e}; {AZURE_SETTINGS}")))
}

fn check(
    url: &str,
    get: &dyn Fn(AzureConfigKey) -> Option<String>,
    is_true: &dyn Fn(AzureConfigKey) -> bool,
) -> Result<(), StorageError> {
    use AzureConfigKey::*;
    if get(AccountName).is_none() {
        return Err(bad(
            url,
            "no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or write \
             abfss://container@ACCOUNT.dfs.core.windows.net/prefix), or AZURE_STORAGE_USE_EMULATOR=true for Azurite"
                .into(),
        ));
    }
    if get(ClientSecret).is_some() {
        for (key, name) in [(ClientId, "AZURE_CLIENT_ID"), (AuthorityId, "AZURE_TENANT_ID")] {
            if get(key).is_none() {
                return Err(bad(url, format!("AZURE_CLIENT_SECRET is set but not {name}")));
            }
        }
    }
    let has_credentials =
        [AccessKey, SasKey, Token, ClientSecret, FederatedTokenFile].into_iter().any(|k| get(k).is_some())
            || is_true(UseAzureCli)
            || is_true(SkipSignature);
    let endpoint = get(Endpoint);
    let azure_host = |e: &str| e.contains(".core.windows.net") || e.contains(".fabric.microsoft.com");
    // Only Azure's own hosts serve its managed identities (the fallback without credentials).
    if !has_credentials && endpoint.as_deref().is_some_and(|e| !azure_host(e)) {
        return Err(bad(
            url,
            format!(
                "no credentials for the endpoint {}: set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY",
                endpoint.unwrap_or_default()
            ),
        ));
    }
    if endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
        && !is_true(Client(ClientConfigKey::AllowHttp))
    {
        return Err(bad(
            url,
            format!(
                "the endpoint {} is plain http; set AZURE_ALLOW_HTTP=true to allow it",
                endpoint.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_urls_name_a_container_an_optional_account_and_a_prefix() {
        let at = |url: &str| match Location::parse(url).unwrap() {
            Location::Azure { container, account, prefix, store_url } => {
                (container, account, prefix, store_url)
            }
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(at("az://c/warehouse/pv/"), ("c".into(), None, "warehouse/pv".into(), "az://c".into()));
        assert_eq!(at("abfs://c"), ("c".into(), None, String::new(), "abfs://c".into()));
        assert_eq!(
            at("abfss://fs@acct.dfs.core.windows.net/x"),
            ("fs".into(), Some("acct".into()), "x".into(), "abfss://fs@acct.dfs.core.windows.net".into())
        );
        for (url, want) in [
            ("az:///x", "no container"),
            ("az://acct.blob.core.windows.net/x", "no container"),
            ("abfss://fs@example.com/x", "not an Azure storage account's host"),
        ] {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn unusable_azure_settings_are_refused_naming_what_is_missing() {
        let account = ("AZURE_STORAGE_ACCOUNT_NAME", "acct");
        let endpoint = ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:10000/acct");
        let key = ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5");
        let cases = [
            (vec![], "set AZURE_STORAGE_ACCOUNT_NAME"),
            (
                vec![account, ("AZURE_CLIENT_SECRET", "s")],
                "AZURE_CLIENT_SECRET is set but not AZURE_CLIENT_ID",
            ),
            (
                vec![account, ("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "i")],
                "AZURE_CLIENT_SECRET is set but not AZURE_TENANT_ID",
            ),
            (vec![account, endpoint], "no credentials for the endpoint http://127.0.0.1:10000/acct"),
            (vec![account, endpoint, key], "set AZURE_ALLOW_HTTP=true"),
        ];
        let root = AzureSettings { container: "c", account: None };
        for (vars, want) in cases {
            let err = build(
                "az://c",
                &root,
                &StoreEnv::from_pairs(vars),
                RetryConfig::default(),
                CountingConnector::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        let ok = [
            vec![account, endpoint, key, ("AZURE_ALLOW_HTTP", "true")],
            vec![("AZURE_STORAGE_USE_EMULATOR", "true")],
            // An account on Azure itself with no key: its managed identity, asked at the first request.
            vec![account],
        ];
        for vars in ok {
            let env = StoreEnv::from_pairs(vars.clone());
            assert!(
                build("az://c", &root, &env, RetryConfig::default(), CountingConnector::default()).is_ok(),
                "{vars:?}"
            );
        }
    }
}
