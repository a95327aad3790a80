//! Fetching over HTTP, for keys and status lists alike: the client (trusted CAs, same-origin
//! redirects only), bodies read under a limit, `Cache-Control: max-age`, and the backoff
//! between failed fetches.

use std::time::Duration;

use crate::config::JwksHttpConfig;
use crate::keys::KeySetError;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("OIDC discovery: {0}")]
    Discovery(String),
    #[error("bearer_token_file: {0}")]
    Credentials(String),
    #[error(transparent)]
    KeySet(#[from] KeySetError),
}

impl FetchError {
    /// The provider could not be reached (connection, timeout, a 5xx): unlike an answer
    /// (an empty key set, a 404, a refused document), this says nothing about its keys.
    pub fn is_unreachable(&self) -> bool {
        match self {
            FetchError::Request(_) => true,
            FetchError::Status(code) => *code >= 500,
            _ => false,
        }
    }
}

/// The HTTP client for key fetches. With a CA file, only its certificates are trusted; with
/// a bearer token, plain http (a redirect to it included) is refused, and reqwest drops the
/// `Authorization` header on redirects to another origin.
pub fn http_client(settings: &JwksHttpConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("jwt-authz/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects())
        .connect_timeout(Duration::from_secs(5));
    // Validated with the configuration; read again here so that a reload picks up a renewed
    // bundle. A file that broke since then fails the start or reload (the configuration in
    // force stays).
    if settings.ca_file.is_some() {
        builder = builder.tls_certs_only(settings.ca_certificates()?);
    }
    if settings.bearer_token_file.is_some() {
        builder = builder.https_only(true);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Follows at most 3 redirects, and only within the origin of the first request: a
/// redirect must not take a key fetch from https to http, nor to a host the configuration
/// never named.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin {
            attempt.error("redirect to another origin refused")
        } else if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A response body, refused past `limit` bytes: on its declared length first, then as it
/// arrives, so a huge (or endless) body is never held whole.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(FetchError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JWKS file, refused when it is larger than `limit`: checked on its size first, and
/// read through a bound, so a huge (or growing) file is never read whole.
pub(crate) async fn read_limited(
    path: &std::path::Path,
    limit: usize,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    use tokio::io::AsyncReadExt;
    let io = |source| FetchError::File {
        path: path.display().to_string(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    if file.metadata().await.map_err(io)?.len() > limit as u64 {
        return Err(FetchError::TooLarge(limit));
    }
    let mut body = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(io)?;
    if body.len() > limit {
        return Err(FetchError::TooLarge(limit));
    }
    Ok((body, None))
}

/// The lifetime a `Cache-Control` value grants: `max-age`, or zero for `no-store`/`no-cache`.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut result = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" => {
                if let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() {
                    result = Some(Duration::from_secs(secs));
                }
            }
            _ => {}
        }
    }
    result
}

/// Exponential backoff from one second up to `max`, with ±20 % jitter so that many
/// replicas do not retry in step.
pub(crate) fn retry_delay(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = Duration::from_secs(1u64 << exp).min(max);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}
