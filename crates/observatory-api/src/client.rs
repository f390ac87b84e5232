//! A client of a peer's HTTP API, for the command line: each call returns the same answer
//! type the server writes (see [`crate::wire`]).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::objectives::ObjectivesAnswer;
use crate::wire::{GraphAnswer, IngestAnswer, PeersAnswer, StatusAnswer};

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// Nothing answered at the peer's address.
    #[error(
        "cannot reach the peer at {peer}: {source}\nhint: start one with `observatory peer`, or pass --peer URL"
    )]
    Unreachable {
        /// The peer as given.
        peer: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The peer answered with an error.
    #[error("{what} failed with HTTP {status}: {message}")]
    Refused {
        /// What was asked.
        what: &'static str,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The peer's message.
        message: String,
    },
    /// The answer is not what a peer answers.
    #[error("the peer's answer to {what} is not what a peer answers: {detail}")]
    Answer {
        /// What was asked.
        what: &'static str,
        /// Why it does not read.
        detail: String,
    },
}

/// An answer as read, and as the peer wrote it (to print it whole, fields this client
/// does not know included).
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    /// The answer.
    pub answer: T,
    /// The JSON it came as.
    pub raw: serde_json::Value,
}

/// A client of one peer.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    peer: String,
}

impl Client {
    /// A client of the peer at `peer` (`http://127.0.0.1:7070`, or just `127.0.0.1:7070`).
    pub fn new(peer: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self { http, peer: peer.to_string() })
    }

    fn url(&self, path: &str) -> String {
        let peer = self.peer.trim_end_matches('/');
        // `--peer 127.0.0.1:7070` means the same as `--peer http://127.0.0.1:7070`.
        if peer.contains("://") { format!("{peer}{path}") } else { format!("http://{peer}{path}") }
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, ClientError> {
        Ok(self.fetch(request, what).await?.answer)
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<Fetched<T>, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { peer: self.peer.clone(), source })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Answer { what, detail: format!("reading it failed: {e}") })?;
        if !status.is_success() {
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            let message = value["error"]["message"].as_str().map(str::to_string).unwrap_or(text);
            return Err(ClientError::Refused { what, status, message });
        }
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ClientError::Answer { what, detail: e.to_string() })?;
        let answer = T::deserialize(&raw).map_err(|e| ClientError::Answer { what, detail: e.to_string() })?;
        Ok(Fetched { answer, raw })
    }

    /// `POST /api/v1/events` with a body of `content_type`.
    pub async fn post_events(&self, body: String, content_type: &str) -> Result<IngestAnswer, ClientError> {
        let request = self
            .http
            .post(self.url("/api/v1/events"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.answer(request, "sending events").await
    }

    /// `GET /api/v1/graph?window=..&at=..`.
    pub async fn graph(&self, window: &str, at: Option<&str>) -> Result<Fetched<GraphAnswer>, ClientError> {
        self.graph_of_flow(window, at, None).await
    }

    /// `GET /api/v1/graph` of one flow (`flow`), or of all.
    pub async fn graph_of_flow(
        &self,
        window: &str,
        at: Option<&str>,
        flow: Option<&str>,
    ) -> Result<Fetched<GraphAnswer>, ClientError> {
        let mut query = vec![("window", window.to_string())];
        if let Some(at) = at {
            query.push(("at", at.to_string()));
        }
        if let Some(flow) = flow {
            query.push(("flow", flow.to_string()));
        }
        self.fetch(self.http.get(self.url("/api/v1/graph")).query(&query), "reading the graph").await
    }

    /// `GET /api/v1/propagation`: the propagation verdict of every node.
    pub async fn propagation(
        &self,
        window: &str,
        at: Option<&str>,
    ) -> Result<Fetched<crate::wire::PropagationAnswer>, ClientError> {
        let mut query = vec![("window", window.to_string())];
        if let Some(at) = at {
            query.push(("at", at.to_string()));
        }
        self.fetch(
            self.http.get(self.url("/api/v1/propagation")).query(&query),
            "reading the propagation verdicts",
        )
        .await
    }

    /// `GET /api/v1/layout`: the graph drawn by the peer.
    pub async fn layout(
        &self,
        window: &str,
        at: Option<&str>,
    ) -> Result<Fetched<crate::picture::PictureAnswer>, ClientError> {
        let mut query = vec![("window", window.to_string())];
        if let Some(at) = at {
            query.push(("at", at.to_string()));
        }
        self.fetch(self.http.get(self.url("/api/v1/layout")).query(&query), "reading the drawing").await
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<Fetched<StatusAnswer>, ClientError> {
        self.fetch(self.http.get(self.url("/api/v1/status")), "reading the status").await
    }

    /// `GET /api/v1/peers`.
    pub async fn peers(&self) -> Result<Fetched<PeersAnswer>, ClientError> {
        self.fetch(self.http.get(self.url("/api/v1/peers")), "reading the peers").await
    }

    /// `GET /api/v1/objectives` (only `name`, if given).
    pub async fn objectives(&self, name: Option<&str>) -> Result<Fetched<ObjectivesAnswer>, ClientError> {
        let query: Vec<(&str, &str)> = name.map(|n| ("name", n)).into_iter().collect();
        self.fetch(self.http.get(self.url("/api/v1/objectives")).query(&query), "reading the objectives")
            .await
    }

    /// `POST /api/v1/objectives/reload`.
    pub async fn reload_objectives(&self) -> Result<Fetched<ObjectivesAnswer>, ClientError> {
        self.fetch(self.http.post(self.url("/api/v1/objectives/reload")), "reloading the objectives").await
    }
}
