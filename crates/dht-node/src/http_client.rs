//! A client of a running node's [HTTP API](crate::api), over hyper: what the `dht-node`
//! client commands (`provide`, `stop`, `find-providers`, …) use.
//!
//! ```no_run
//! use dht_node::http_client::ApiClient;
//!
//! # async fn demo() -> Result<(), dht_node::http_client::ClientError> {
//! // The management listener needs the token (`api.token` in the node's data directory).
//! let token_file = dht_node::config::default_data_dir().join("api.token");
//! let token = std::fs::read_to_string(token_file).unwrap_or_default();
//! let api = ApiClient::new("http://127.0.0.1:5481")?.with_token(token.trim());
//! api.provide(&["bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".into()], false).await?;
//! // Delegated Routing is on the routing listener.
//! let routing = ApiClient::new("http://127.0.0.1:5480")?;
//! for provider in routing.find_providers("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy").await? {
//!     println!("{} {:?}", provider.id, provider.addrs);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{CidList, PeerRecord, ProvidedKey, StatsView};

/// What can go wrong talking to a node's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL or a path is not a valid URI.
    #[error("bad URL {0}")]
    Url(String),
    /// The connection or the request failed.
    #[error("HTTP: {0}")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node answered with an error status.
    #[error("{status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The error message of the body (or the body).
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer: {0}")]
    Json(#[from] serde_json::Error),
    /// The answer was well-formed JSON with a value that does not decode (e.g. a multihash).
    #[error("unexpected answer: bad {what}: {source}")]
    BadAnswer {
        /// What did not decode.
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller's sink for streamed answers failed (e.g. writing to standard output).
    #[error("writing the answer: {0}")]
    Sink(#[source] std::io::Error),
}

/// A client of one of a node's HTTP listeners: the management API (with its token) or the
/// Delegated Routing API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:5480`), with a 5-minute
    /// timeout per request.
    ///
    /// # Errors
    /// [`ClientError::Url`] when `base` is not an `http://` URL.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|_| ClientError::Url(base.clone()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(ClientError::Url(base));
        }
        Ok(ApiClient {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(300),
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer <token>` (the management API's).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same client with another per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; returns the status, the content type and the body.
    ///
    /// # Errors
    /// [`ClientError`] on a bad path, a failed connection or a timeout (error statuses are
    /// returned, not errors).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.clone()))?;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| ClientError::Http(e.into()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ClientError::Http(e.into()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.into()))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn json<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<R, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|v| ("application/json", v)))
            .transpose()?;
        let (status, bytes) = self.send(method, path, None, body).await?;
        ok(status, &bytes)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Starts providing `cids` (`wait`: return once their first provide finished); returns
    /// how many the node accepted.
    ///
    /// # Errors
    /// [`ClientError`]; a bad CID is a `400` [`ClientError::Status`].
    pub async fn provide(&self, cids: &[String], wait: bool) -> Result<u64, ClientError> {
        let list = CidList {
            cids: cids.to_vec(),
            wait,
            force: false,
        };
        let v: serde_json::Value = self
            .json(Method::POST, "/api/v1/provide", Some(&list))
            .await?;
        Ok(v["accepted"].as_u64().unwrap_or(0))
    }

    /// Stops providing `cids`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn stop(&self, cids: &[String]) -> Result<u64, ClientError> {
        let list = CidList {
            cids: cids.to_vec(),
            ..CidList::default()
        };
        let v: serde_json::Value = self.json(Method::POST, "/api/v1/stop", Some(&list)).await?;
        Ok(v["stopped"].as_u64().unwrap_or(0))
    }

    /// The provider's counters.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn stats(&self) -> Result<StatsView, ClientError> {
        self.json(Method::GET, "/api/v1/stats", None::<&()>).await
    }

    /// Whether the node's keystore holds `cid`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn holds(&self, cid: &str) -> Result<bool, ClientError> {
        let v: serde_json::Value = self
            .json(Method::GET, &format!("/api/v1/provided/{cid}"), None::<&()>)
            .await?;
        Ok(v["held"].as_bool().unwrap_or(false))
    }

    /// Every key the node provides (`GET /api/v1/provided`), in keyspace order, handed to
    /// `each` as the lines arrive (one line at a time in memory, whatever their number);
    /// returns how many. The timeout applies to each wait for more of the answer.
    ///
    /// # Errors
    /// [`ClientError`]; a store error on the node's side is a [`ClientError::Status`] with
    /// its message, after the keys before it were handed over.
    pub async fn provided(
        &self,
        mut each: impl FnMut(ProvidedKey) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/api/v1/provided", self.base);
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.clone()))?;
        let mut request = Request::builder().method(Method::GET).uri(uri);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Http(e.into()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
            .map_err(|e| ClientError::Http(e.into()))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = tokio::time::timeout(self.timeout, body.collect())
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))?
                .map_err(|e| ClientError::Http(e.into()))?
                .to_bytes();
            ok(status, &bytes)?;
            return Err(ClientError::Status {
                status,
                message: "unexpected status".into(),
            });
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut count = 0;
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))?;
            let data = match frame {
                None => break,
                Some(frame) => frame.map_err(|e| ClientError::Http(e.into()))?,
            };
            let Ok(data) = data.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                count += provided_line(&line[..end], &mut each)?;
            }
        }
        count += provided_line(&pending, &mut each)?;
        Ok(count)
    }

    /// The routing table's summary.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn routing_table(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, "/api/v1/routing-table", None::<&()>)
            .await
    }

    /// The node's peer id and addresses (`{"ID":…,"Addrs":[…]}`).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn id(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, "/api/v1/id", None::<&()>).await
    }

    /// The providers of `cid` through `/routing/v1/providers` (NDJSON); empty on 404.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn find_providers(&self, cid: &str) -> Result<Vec<PeerRecord>, ClientError> {
        self.ndjson(&format!("/routing/v1/providers/{cid}")).await
    }

    /// The addresses of `peer` through `/routing/v1/peers`; `None` on 404.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn find_peer(&self, peer: &str) -> Result<Option<PeerRecord>, ClientError> {
        Ok(self
            .ndjson(&format!("/routing/v1/peers/{peer}"))
            .await?
            .into_iter()
            .next())
    }

    async fn ndjson(&self, path: &str) -> Result<Vec<PeerRecord>, ClientError> {
        let (status, bytes) = self
            .send(Method::GET, path, Some("application/x-ndjson"), None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        ok(status, &bytes)?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(ClientError::from))
            .collect()
    }

    /// The value record stored under `key`; `None` on 404.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let path = format!("/api/v1/values/{}", hex::encode(key));
        let (status, bytes) = self.send(Method::GET, &path, None, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ok(status, &bytes)?;
        Ok(Some(bytes.to_vec()))
    }

    /// Puts a value record; returns how many peers accepted it.
    ///
    /// # Errors
    /// [`ClientError`]; an invalid record is a `400` [`ClientError::Status`].
    pub async fn put_value(&self, key: &[u8], value: Vec<u8>) -> Result<u64, ClientError> {
        let path = format!("/api/v1/values/{}", hex::encode(key));
        let (status, bytes) = self
            .send(
                Method::PUT,
                &path,
                None,
                Some(("application/octet-stream", value)),
            )
            .await?;
        ok(status, &bytes)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v["accepted_by"].as_u64().unwrap_or(0))
    }

    /// The Prometheus metrics text.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (status, bytes) = self.send(Method::GET, "/metrics", None, None).await?;
        ok(status, &bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One line of `GET /api/v1/provided`, handed to `each`: 1 key, or 0 for an empty line.
fn provided_line(
    line: &[u8],
    each: &mut impl FnMut(ProvidedKey) -> Result<(), ClientError>,
) -> Result<u64, ClientError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    let value: serde_json::Value = serde_json::from_slice(line)?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ClientError::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: error.to_owned(),
        });
    }
    each(serde_json::from_value(value)?)?;
    Ok(1)
}

fn ok(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Err(ClientError::Status { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that cannot connect is `ClientError::Http`, keeping the connection error.
    #[tokio::test]
    async fn a_failed_connection_keeps_its_source() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let client = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("a valid URL");
        let err = client.stats().await.expect_err("nothing listens");
        assert!(matches!(err, ClientError::Http(_)), "{err}");
        assert!(std::error::Error::source(&err).is_some(), "{err}");
    }
}
