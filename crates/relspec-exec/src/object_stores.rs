//! Object stores by URL: S3, Google Cloud Storage, Azure Blob Storage and a
//! local directory, each built from its backend's standard environment
//! variables (credentials never come from the workspace), with bounded
//! timeouts and retries.
//!
//! Architecture invariant: the one place that turns a URL into an
//! `ObjectStore`; the remote cache and (later) datasets on object storage
//! go through it, so both honour the same environment and timeouts.

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// How patient requests to a store are.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Timeout of one request.
    pub timeout: Duration,
    /// Timeout of connecting.
    pub connect_timeout: Duration,
    /// Retries of a failed request (transient errors only).
    pub retries: usize,
}

/// An opened store and the prefix (the URL's path) everything lives under.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store, rooted at the bucket (container, directory).
    pub store: Arc<dyn ObjectStore>,
    /// The URL's path inside it (may be empty).
    pub prefix: StorePath,
}

impl OpenedStore {
    /// `prefix/rel`.
    pub fn path(&self, rel: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }
}

/// Open the store a URL names (`s3://bucket/prefix`, `gs://…`, `az://…`,
/// `abfs[s]://…`, `file:///path`). Builds clients only: no request is made.
pub fn open(url: &str, patience: Patience) -> Result<OpenedStore, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` is not a URL"))?;
    let client = ClientOptions::new().with_timeout(patience.timeout).with_connect_timeout(patience.connect_timeout);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: patience.retries,
        retry_timeout: patience.timeout,
    };
    let bucket_and_path = |rest: &str| -> (String, String) {
        let (b, p) = rest.split_once('/').unwrap_or((rest, ""));
        (b.to_string(), p.trim_matches('/').to_string())
    };
    let fail = |e: object_store::Error| format!("cannot open `{url}`: {e}");
    let (store, path): (Arc<dyn ObjectStore>, String) = match scheme {
        "s3" | "s3a" => {
            let (bucket, path) = bucket_and_path(rest);
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
            // An explicit `http://` endpoint (MinIO, a local test server) is
            // what its user asked for: allow plain HTTP to it.
            let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_default();
            let client = if endpoint.starts_with("http://") { client.with_allow_http(true) } else { client };
            if !endpoint.is_empty() {
                b = b.with_endpoint(endpoint);
            }
            (Arc::new(b.with_client_options(client).build().map_err(fail)?), path)
        }
        "gs" => {
            let (bucket, path) = bucket_and_path(rest);
            let b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).with_retry(retry);
            (Arc::new(b.with_client_options(client).build().map_err(fail)?), path)
        }
        "az" | "abfs" | "abfss" => {
            let (container, path) = bucket_and_path(rest.split('@').next().unwrap_or(rest));
            let b = MicrosoftAzureBuilder::from_env().with_container_name(container).with_retry(retry);
            (Arc::new(b.with_client_options(client).build().map_err(fail)?), path)
        }
        "file" => {
            let dir = std::path::Path::new(rest);
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{url}`: {e}"))?;
            (Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(fail)?), String::new())
        }
        other => return Err(format!("`{url}`: the scheme `{other}` is not an object store relspec reaches")),
    };
    let prefix = StorePath::parse(&path).map_err(|e| format!("`{url}`: invalid path: {e}"))?;
    Ok(OpenedStore { store, prefix })
}

/// The patience of dataset listings and reads: DataFusion's requests go
/// through the same store.
pub const DATASETS: Patience =
    Patience { timeout: Duration::from_secs(60), connect_timeout: Duration::from_secs(10), retries: 3 };

/// `scheme://bucket` of a URL: what DataFusion's object store registry keys a store by.
pub fn store_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    url::Url::parse(&format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or_default()))
        .map_err(|e| format!("`{url}`: {e}"))
}

/// The files of a dataset on object storage: the object `url` names, or
/// every object under it with extension `ext` when it ends with `/` (hidden
/// names, `.x` and `_x`, left out as locally). Each with its version tag,
/// `etag:<etag>:<size>` (or the last-modified time where a store has no
/// ETag), sorted by URL.
pub fn list_files(url: &str, ext: &str, patience: Patience) -> Result<Vec<(String, String)>, String> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let at = open(url, patience)?;
    let base = store_url(url)?;
    let base = base.as_str().trim_end_matches('/');
    let tag = |m: &object_store::ObjectMeta| match &m.e_tag {
        Some(e) => format!("etag:{}:{}", e.trim_matches('"'), m.size),
        None => format!("modified:{}:{}", m.last_modified.timestamp_nanos_opt().unwrap_or_default(), m.size),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to list `{url}`: {e}"))?;
    rt.block_on(async {
        let metas: Vec<object_store::ObjectMeta> = if url.ends_with('/') {
            at.store.list(Some(&at.prefix)).try_collect().await.map_err(|e| format!("cannot list `{url}`: {e}"))?
        } else {
            match at.store.head(&at.prefix).await {
                Ok(m) => vec![m],
                Err(object_store::Error::NotFound { .. }) => vec![],
                Err(e) => return Err(format!("cannot read `{url}`: {e}")),
            }
        };
        let mut files: Vec<(String, String)> = metas
            .iter()
            .filter(|m| {
                !url.ends_with('/')
                    || (m.location.as_ref().ends_with(ext)
                        && !m.location.prefix_match(&at.prefix).into_iter().flatten().any(|p| {
                            let p = p.as_ref();
                            p.starts_with('.') || p.starts_with('_')
                        }))
            })
            .map(|m| (format!("{base}/{}", m.location), tag(m)))
            .collect();
        files.sort();
        Ok(files)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patience() -> Patience {
        Patience { timeout: Duration::from_secs(1), connect_timeout: Duration::from_secs(1), retries: 0 }
    }

    #[test]
    fn urls_open_without_requests_and_keep_their_prefix() {
        let s = open("s3://bucket/some/prefix/", patience()).unwrap();
        assert_eq!(s.path("records/ab/x.json").as_ref(), "some/prefix/records/ab/x.json");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("remote").display());
        let s = open(&url, patience()).unwrap();
        assert!(dir.path().join("remote").is_dir());
        assert_eq!(s.path("a/b").as_ref(), "a/b");
        assert!(open("ftp://x/y", patience()).unwrap_err().contains("scheme `ftp`"));
        assert!(open("not a url", patience()).unwrap_err().contains("is not a URL"));
    }
}
