//! The introspection request (RFC 7662 §2.1): where it goes (configured, or found by
//! discovery), how this client authenticates, and its body.

use base64::Engine;
use serde_json::Value;

use crate::config::{ClientAuth, IntrospectionConfig, ProviderConfig, read_secret, signing_key};
use crate::keys::fetch::{self, FetchError};

/// RFC 7523 §2.2.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// RFC 9701 §4: the media type of a JWT-secured answer, asked for in `Accept`.
pub const JWT_ANSWER: &str = "application/token-introspection+jwt";

/// How long a client assertion is good for: long enough for one call and its retries'
/// clock skew, short enough that one seen on the way is of no use later.
const ASSERTION_LIFETIME: u64 = 60;

/// The largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// Why no request could be sent (the endpoint unknown, an assertion that cannot be signed):
/// the token cannot be checked, so the check answers 503.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("credentials: {0}")]
    Credentials(String),
}

/// This client's credentials, read from their files when the configuration is put in force
/// (at start and at each reload: a rotated secret needs a reload, not a restart), so that a
/// call does no file I/O and parses no key.
pub enum Credentials {
    /// The whole `Authorization: Basic ...` value.
    Basic(String),
    Post(String),
    Jwt {
        key: jsonwebtoken::EncodingKey,
        algorithm: jsonwebtoken::Algorithm,
        kid: Option<String>,
        audience: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    /// Never the secret or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Basic(_) => "Credentials::Basic(..)",
            Credentials::Post(_) => "Credentials::Post(..)",
            Credentials::Jwt { .. } => "Credentials::Jwt(..)",
        })
    }
}

impl Credentials {
    /// Reads `config`'s secret or key file (validated with the configuration; read again
    /// here, so an error names what changed since).
    pub fn load(config: &IntrospectionConfig) -> Result<Self, String> {
        Ok(match &config.client_auth {
            ClientAuth::ClientSecretBasic { secret_file } => {
                Credentials::Basic(basic(&config.client_id, &read_secret(secret_file)?))
            }
            ClientAuth::ClientSecretPost { secret_file } => {
                Credentials::Post(read_secret(secret_file)?)
            }
            ClientAuth::PrivateKeyJwt {
                key_file,
                algorithm,
                kid,
                audience,
            } => Credentials::Jwt {
                key: signing_key(key_file, *algorithm)?,
                algorithm: *algorithm,
                kid: kid.clone(),
                audience: audience.clone(),
            },
        })
    }
}

/// The HTTP client for one provider's endpoint: its CA file when set, and no redirect
/// followed at all (a redirect would carry the token, and the client's credentials, to a URL
/// the configuration never named).
pub fn http_client(config: &IntrospectionConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("jwt-authz/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout)
        .timeout(config.timeout);
    if config.ca_file.is_some() {
        builder = builder.tls_certs_only(config.ca_certificates()?);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The endpoint named by `<issuer>/.well-known/openid-configuration` (RFC 8414 §2,
/// `introspection_endpoint`): of the issuer's origin (a document that names another host
/// could send every token there), over a transport the provider allows.
pub async fn discover(
    client: &reqwest::Client,
    provider: &ProviderConfig,
) -> Result<String, RequestError> {
    let failed = |e: &dyn std::fmt::Display| RequestError::Discovery(e.to_string());
    let url = format!(
        "{}/.well-known/openid-configuration",
        provider.issuer.trim_end_matches('/')
    );
    let response = client.get(&url).send().await.map_err(|e| failed(&e))?;
    if !response.status().is_success() {
        return Err(failed(&FetchError::Status(response.status().as_u16())));
    }
    let body = fetch::read_body(response, MAX_DISCOVERY_BYTES)
        .await
        .map_err(|e| failed(&e))?;
    let document: Value = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
    let Some(endpoint) = document
        .get("introspection_endpoint")
        .and_then(Value::as_str)
    else {
        return Err(failed(&"no introspection_endpoint"));
    };
    let same_origin = match (
        reqwest::Url::parse(&provider.issuer),
        reqwest::Url::parse(endpoint),
    ) {
        (Ok(issuer), Ok(named)) => issuer.origin() == named.origin(),
        _ => false,
    };
    if !same_origin || !provider.allows_url(endpoint) {
        return Err(failed(&format!(
            "introspection_endpoint {endpoint:?} is not of the issuer's origin over an allowed transport"
        )));
    }
    Ok(endpoint.to_owned())
}

/// The request for `token`: the body (`token`, `token_type_hint`, and the client's
/// credentials when they travel in it) and the `Authorization` header for HTTP Basic.
pub fn build(
    client: &reqwest::Client,
    endpoint: &str,
    config: &IntrospectionConfig,
    credentials: &Credentials,
    token: &str,
    now: u64,
) -> Result<reqwest::RequestBuilder, RequestError> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token);
    // §2.1: a hint only; the server looks further when it is wrong.
    form.append_pair("token_type_hint", "access_token");
    let mut request = client.post(endpoint);
    match credentials {
        Credentials::Basic(value) => {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        Credentials::Post(secret) => {
            form.append_pair("client_id", &config.client_id);
            form.append_pair("client_secret", secret);
        }
        Credentials::Jwt {
            key,
            algorithm,
            kid,
            audience,
        } => {
            let audience = audience.as_deref().unwrap_or(endpoint);
            let assertion = assertion(&config.client_id, audience, *algorithm, kid, key, now)?;
            form.append_pair("client_id", &config.client_id);
            form.append_pair("client_assertion_type", ASSERTION_TYPE);
            form.append_pair("client_assertion", &assertion);
        }
    }
    let accept = if config.jwt_response {
        JWT_ANSWER
    } else {
        "application/json"
    };
    Ok(request
        .header(reqwest::header::ACCEPT, accept)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form.finish()))
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`: RFC 6749 §2.3.1 form-encodes both
/// before they are joined (a `:` in either would otherwise split them elsewhere).
pub fn basic(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A client assertion (RFC 7523 §3): `iss` and `sub` this client, `aud` the endpoint (or
/// the configured `audience`, such as the issuer), a short `exp`, a random `jti` so that the
/// server can refuse it twice.
fn assertion(
    client_id: &str,
    audience: &str,
    algorithm: jsonwebtoken::Algorithm,
    kid: &Option<String>,
    key: &jsonwebtoken::EncodingKey,
    now: u64,
) -> Result<String, RequestError> {
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid.clone_from(kid);
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti)
        .map_err(|_| RequestError::Credentials("no randomness for the assertion".to_owned()))?;
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
    });
    jsonwebtoken::encode(&header, &claims, key)
        .map_err(|e| RequestError::Credentials(format!("cannot sign the assertion: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_before_base64() {
        // RFC 6749 §2.3.1 (Appendix B's encoding): a `:` and a space in the secret.
        let header = basic("jwt authz", "s:cret");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(header.trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(String::from_utf8(raw).expect("utf-8"), "jwt+authz:s%3Acret");
    }
}
