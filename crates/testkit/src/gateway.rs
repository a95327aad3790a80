//! A client for a stack's public side (Envoy's listener), shared by the end-to-end tests
//! that run processes and the ones that run containers.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::dpop::DpopClient;

/// Part `index` of a compact JWT (0 header, 1 claims), decoded.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

pub struct Gateway {
    pub base: String,
    client: reqwest::Client,
}

impl Gateway {
    pub fn new(base: &str) -> Self {
        Self::with_client(
            base,
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        )
    }

    /// A client of its own (a TLS identity, trusted roots).
    pub fn with_client(base: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.to_owned(),
            client,
        }
    }

    pub async fn try_login(&self, user: &str, password: &str) -> Result<String, StatusCode> {
        let response = self
            .client
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .expect("login request");
        if response.status() != StatusCode::OK {
            return Err(response.status());
        }
        let body: Value = response.json().await.expect("json");
        Ok(body["accessToken"].as_str().expect("token").to_owned())
    }

    /// A login asking for an opaque token (`token_format: opaque`), with a DPoP proof by
    /// `client` when given: the status and the JSON body.
    pub async fn login_opaque(
        &self,
        user: &str,
        password: &str,
        client: Option<&DpopClient>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/auth/login", self.base);
        let mut request = self
            .client
            .post(&url)
            .json(&json!({"username": user, "password": password, "token_format": "opaque"}));
        if let Some(client) = client {
            request = request.header("dpop", client.proof("POST", &url, None));
        }
        let response = request.send().await.expect("login request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// [`Gateway::login_opaque`] that must succeed: the opaque token.
    pub async fn opaque_token(&self, user: &str, password: &str) -> String {
        let (status, body) = self.login_opaque(user, password, None).await;
        assert_eq!(status, StatusCode::OK, "opaque login: {body}");
        body["accessToken"].as_str().expect("token").to_owned()
    }

    /// `POST /auth/logout` with `token` as a bearer token: the status.
    pub async fn logout(&self, token: &str) -> StatusCode {
        self.client
            .post(format!("{}/auth/logout", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("logout request")
            .status()
    }

    /// A login with a DPoP proof by `client` (RFC 9449 §5): the status and the JSON body.
    pub async fn login_dpop(
        &self,
        user: &str,
        password: &str,
        client: &DpopClient,
    ) -> (StatusCode, Value) {
        let url = format!("{}/auth/login", self.base);
        let response = self
            .client
            .post(&url)
            .header("dpop", client.proof("POST", &url, None))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .expect("login request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET `path` with `Authorization: DPoP token` and `proof` (a fresh one unless given).
    pub async fn get_dpop(
        &self,
        path: &str,
        token: &str,
        client: &DpopClient,
        proof: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let fresh;
        let proof = match proof {
            Some(proof) => proof,
            None => {
                fresh = client.proof("GET", &format!("{}{path}", self.base), Some(token));
                &fresh
            }
        };
        self.get(
            path,
            None,
            &[("authorization", &format!("DPoP {token}")), ("dpop", proof)],
        )
        .await
    }

    /// The status of bob's login sent with a bearer token that is not a token: the login
    /// route is public, so the token must not matter.
    pub async fn login_status_with_a_bad_token(&self) -> StatusCode {
        self.client
            .post(format!("{}/auth/login", self.base))
            .bearer_auth("not.a.token")
            .json(&json!({"username": "bob", "password": "bob-password"}))
            .send()
            .await
            .expect("login")
            .status()
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        self.try_login(user, password)
            .await
            .unwrap_or_else(|status| panic!("login through Envoy answered {status}"))
    }

    /// GET `path` with an optional bearer token and extra headers. A request that gets no
    /// answer at all counts as 502.
    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                (
                    status,
                    headers,
                    response.json().await.unwrap_or(Value::Null),
                )
            }
            Err(_) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), Value::Null),
        }
    }

    pub async fn status(&self, path: &str, token: Option<&str>) -> StatusCode {
        self.get(path, token, &[]).await.0
    }

    /// Retries until `path` answers `want` or `within` passes; returns the last status
    /// (Envoy's health checks and DNS need a moment after a restart).
    pub async fn eventually(
        &self,
        path: &str,
        token: Option<&str>,
        want: StatusCode,
        within: Duration,
    ) -> StatusCode {
        let start = Instant::now();
        loop {
            let status = self.status(path, token).await;
            if status == want || start.elapsed() > within {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
