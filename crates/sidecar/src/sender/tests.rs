use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::config::TokenSource;
use jwt_authz_jose::dpop::DpopError;
use jwt_authz_jose::dpop::examples::{ACCESS_TOKEN, EXAMPLE_JKT, FIGURE_13};

/// RFC 9449 Figure 13's clock.
const AT: u64 = 1_562_262_618;

/// A provider as a config file gives it (YAML read into JSON, as `Config::parse` does).
fn provider(extra: &str) -> ProviderConfig {
    let yaml = format!(
        "name: p\nissuer: https://i\naudiences: [a]\njwks: {{uri: https://i/jwks}}\n{extra}"
    );
    let value: Value = serde_norway::from_str(&yaml).unwrap();
    serde_json::from_value(value).unwrap()
}

fn claims(value: serde_json::Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// The DPoP-bound access token of RFC 9449 Figures 6 and 10.
fn bound() -> Map<String, Value> {
    claims(json!({"sub": "someone@example.com", "cnf": {"jkt": EXAMPLE_JKT}}))
}

/// RFC 9449 Figure 13's request, `GET https://resource.example.org/protectedresource` with
/// `Authorization: DPoP <token>` and its proof, as a front end describes it.
struct Request {
    headers: HashMap<String, String>,
    token: &'static str,
    target: &'static str,
    host: &'static str,
    scheme: Option<&'static str>,
    certificate: Option<String>,
    public_scheme: Option<&'static str>,
}

impl Request {
    fn figure_13() -> Self {
        let headers = [
            ("authorization", format!("DPoP {ACCESS_TOKEN}")),
            ("dpop", FIGURE_13.to_owned()),
        ];
        Self {
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            token: ACCESS_TOKEN,
            target: "/protectedresource",
            host: "resource.example.org",
            scheme: Some("https"),
            certificate: None,
            public_scheme: None,
        }
    }

    fn check(
        &self,
        scheme: Scheme,
        provider: &ProviderConfig,
        claims: &Map<String, Value>,
    ) -> Result<Option<ReplayCheck>, Deny> {
        let no_extensions = HashMap::new();
        let http = Incoming {
            method: "GET",
            target: self.target,
            host: self.host,
            headers: (&self.headers).into(),
            context_extensions: &no_extensions,
            scheme: self.scheme,
            certificate: self.certificate.as_deref(),
        };
        let found = Found {
            token: self.token,
            source: &TokenSource::Bearer,
            scheme,
        };
        let context = Context {
            public_scheme: self.public_scheme,
            now: AT,
            nonce: None,
        };
        check(&http, &found, provider, claims, context)
    }
}

#[test]
fn rfc_9449_figure_13_request_is_accepted_and_owes_a_replay_check() {
    let provider = provider("dpop: {mode: required}");
    let accepted = Request::figure_13()
        .check(Scheme::Dpop, &provider, &bound())
        .unwrap();
    assert_eq!(
        accepted,
        Some(ReplayCheck {
            // By the provider's issuer (a rename in a reload keeps what was seen).
            key: dpop::replay::proof_key("https://i", EXAMPLE_JKT, "e1j3V_bKic8-LAEB"),
            // Figure 13's `iat`.
            iat: 1_562_262_618,
            // max_age 60 s + twice the 5 s leeway: as long as the proof is accepted.
            ttl: Duration::from_secs(70),
        })
    );
    // htu ignores the query (§4.3 check 9), and `dpop.scheme` stands in for a front end
    // that does not report the scheme.
    let mut request = Request::figure_13();
    request.target = "/protectedresource?page=2";
    request.scheme = None;
    request.public_scheme = Some("https");
    assert!(request.check(Scheme::Dpop, &provider, &bound()).is_ok());
}

#[test]
fn a_bound_token_as_bearer_is_a_downgrade_in_every_mode() {
    for mode in ["off", "optional", "required"] {
        let provider = provider(&format!("dpop: {{mode: {mode}}}"));
        assert_eq!(
            Request::figure_13().check(Scheme::Bearer, &provider, &bound()),
            Err(Deny::DpopBoundAsBearer),
            "{mode}"
        );
    }
}

#[test]
fn the_mode_decides_what_else_passes() {
    let unbound = claims(json!({"sub": "u"}));
    let off = provider("");
    let optional = provider("dpop: {mode: optional}");
    let required = provider("dpop: {mode: required}");
    let request = Request::figure_13();
    assert_eq!(request.check(Scheme::Bearer, &off, &unbound), Ok(None));
    assert_eq!(request.check(Scheme::Bearer, &optional, &unbound), Ok(None));
    assert_eq!(
        request.check(Scheme::Bearer, &required, &unbound),
        Err(Deny::DpopRequired)
    );
    assert_eq!(
        request.check(Scheme::Dpop, &off, &bound()),
        Err(Deny::DpopNotAccepted)
    );
    // §7.1: the DPoP scheme with a token that is not bound.
    assert_eq!(
        request.check(Scheme::Dpop, &optional, &unbound),
        Err(Deny::DpopUnbound)
    );
}

#[test]
fn the_proof_must_be_there_once_and_for_this_request_token_and_key() {
    let provider = provider("dpop: {mode: optional}");
    let refused = |request: Request| request.check(Scheme::Dpop, &provider, &bound());
    let mut missing = Request::figure_13();
    missing.headers.remove("dpop");
    assert_eq!(refused(missing), Err(Deny::DpopMissingProof));
    // Two `DPoP` headers arrive joined with a comma (§4.3 check 1).
    let mut two = Request::figure_13();
    two.headers
        .insert("dpop".into(), format!("{FIGURE_13},{FIGURE_13}"));
    assert_eq!(refused(two), Err(Deny::DpopMultipleProofs));
    // Another host, another scheme, or no scheme known: htu does not match (check 9).
    let mut elsewhere = Request::figure_13();
    elsewhere.host = "attacker.example";
    let mut plain = Request::figure_13();
    plain.scheme = Some("http");
    let mut unknown = Request::figure_13();
    unknown.scheme = None;
    for request in [elsewhere, plain, unknown] {
        assert_eq!(
            refused(request),
            Err(Deny::DpopInvalidProof(DpopError::WrongUri))
        );
    }
    // The proof accompanies another access token (ath, check 12).
    let mut other_token = Request::figure_13();
    other_token.token = "another-token";
    assert_eq!(
        refused(other_token),
        Err(Deny::DpopInvalidProof(DpopError::WrongTokenHash))
    );
    // The token is bound to another key (§6.1).
    let other_key = claims(json!({"cnf": {"jkt": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}}));
    assert_eq!(
        Request::figure_13().check(Scheme::Dpop, &provider, &other_key),
        Err(Deny::DpopKeyMismatch)
    );
}

/// As Envoy puts it in `source.certificate`: the PEM, URL-encoded.
fn envoy_certificate(name: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    percent_encoding::utf8_percent_encode(&cert.cert.pem(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[test]
fn a_certificate_bound_token_needs_the_certificate_it_names() {
    let mine = envoy_certificate("mine.test");
    let other = envoy_certificate("other.test");
    let thumbprint = mtls::certificate_thumbprint(&mine).unwrap();
    let token = claims(json!({"sub": "u", "cnf": {"x5t#S256": thumbprint}}));
    let optional = provider("");
    let with = |certificate: Option<&str>| {
        let mut request = Request::figure_13();
        request.certificate = certificate.map(str::to_owned);
        request.check(Scheme::Bearer, &optional, &token)
    };
    assert_eq!(with(Some(&mine)), Ok(None));
    assert_eq!(with(Some(&other)), Err(Deny::CertificateMismatch));
    assert_eq!(with(None), Err(Deny::CertificateMissing));
    assert_eq!(
        with(Some("-----BEGIN%20CERTIFICATE-----garbage")),
        Err(Deny::CertificateMismatch)
    );
    // `required` refuses unbound tokens, certificate or not.
    let required = provider("certificate_binding: required");
    let mut request = Request::figure_13();
    request.certificate = Some(mine);
    assert_eq!(
        request.check(Scheme::Bearer, &required, &claims(json!({"sub": "u"}))),
        Err(Deny::CertificateRequired)
    );
}
