use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::config::{ClaimHeader, RuleConfig};
use crate::extract::Scheme;
use crate::identity::HeaderMutation;
use crate::policy::Policy;
use crate::request::RequestInfo;

fn policy(yaml: &str) -> Policy {
    let rules: Vec<RuleConfig> =
        serde_path_to_error::deserialize(serde_norway::from_str::<Value>(yaml).unwrap()).unwrap();
    Policy::new(&rules, &PathConfig::default(), &["corp", "partner"]).unwrap()
}

const RULES: &str = r#"
- match: {path: {prefix: /billing/}}
  providers: [partner]
  audiences: [billing-api]
  access: authenticated
- match: {path: {prefix: /admin/}}
  mode: enforce
  access:
    claims: [{claim: role, any_of: [admin]}]
- access: authenticated
"#;

fn token(claims: Value) -> Arc<VerifiedToken> {
    Arc::new(VerifiedToken {
        provider: 0,
        thumbprint: "t".into(),
        claims: claims.as_object().unwrap().clone(),
        exp: None,
    })
}

const BEARER: TokenSource = TokenSource::Bearer;

fn found(source: &TokenSource) -> Found<'_> {
    Found {
        token: "t",
        source,
        scheme: Scheme::Bearer,
    }
}

fn corp<'a>(sources: &'a [TokenSource], audiences: &'a [String]) -> Provider<'a> {
    Provider {
        index: 0,
        name: "corp",
        token_sources: sources,
        audiences,
        mode: None,
    }
}

#[test]
fn the_most_specific_mode_applies() {
    use Mode::{Enforce, Shadow};
    assert_eq!(mode(None, None, Shadow), Shadow);
    assert_eq!(mode(None, Some(Enforce), Shadow), Enforce);
    assert_eq!(mode(Some(Shadow), Some(Enforce), Enforce), Shadow);
    // A route that enforces stays enforced under a shadow provider and top level.
    assert_eq!(mode(Some(Enforce), Some(Shadow), Shadow), Enforce);
}

#[test]
fn a_route_takes_only_its_providers_sources_and_audiences() {
    let p = policy(RULES);
    let ext = HashMap::new();
    let billing = p.route(&RequestInfo::new("GET", "/billing/1", "h", &ext));
    let other = p.route(&RequestInfo::new("GET", "/other", "h", &ext));
    let sources = [BEARER];
    let api = ["api".to_owned()];
    let corp = corp(&sources, &api);
    let claims = token(json!({"aud": ["x", "api"]}));
    assert_eq!(
        accepts(&other, &found(&BEARER), &corp, &claims.claims),
        Ok(())
    );
    // The route names another provider.
    assert_eq!(
        accepts(&billing, &found(&BEARER), &corp, &claims.claims),
        Err(Deny::ProviderNotAccepted)
    );
    // The route's audiences replace the provider's.
    let partner = Provider {
        index: 1,
        name: "partner",
        ..corp
    };
    assert_eq!(
        accepts(&billing, &found(&BEARER), &partner, &claims.claims),
        Err(Deny::Invalid(VerifyError::WrongAudience))
    );
    let billing_token = token(json!({"aud": "billing-api"}));
    assert_eq!(
        accepts(&billing, &found(&BEARER), &partner, &billing_token.claims),
        Ok(())
    );
    // A token carried where its provider does not allow it.
    let cookie = TokenSource::Cookie("session".into());
    assert_eq!(
        accepts(&other, &found(&cookie), &corp, &claims.claims),
        Err(Deny::WrongSource)
    );
    // No `aud`, or a non-string one, matches nothing.
    for claims in [json!({}), json!({"aud": 5}), json!({"aud": [5]})] {
        assert_eq!(
            accepts(&other, &found(&BEARER), &corp, &token(claims).claims),
            Err(Deny::Invalid(VerifyError::WrongAudience))
        );
    }
}

#[test]
fn claim_requirements_are_checked_only_where_a_route_has_them() {
    let p = policy(RULES);
    let ext = HashMap::new();
    let admin = p.route(&RequestInfo::new("GET", "/admin/x", "h", &ext));
    let other = p.route(&RequestInfo::new("GET", "/other", "h", &ext));
    let user = token(json!({"role": "user"}));
    assert_eq!(
        claims_hold(&admin, &user.claims),
        Err(Deny::InsufficientClaims)
    );
    assert_eq!(claims_hold(&other, &user.claims), Ok(()));
    assert_eq!(
        claims_hold(&admin, &token(json!({"role": ["admin"]})).claims),
        Ok(())
    );
}

fn identity_config(dynamic_metadata: bool) -> IdentityConfig {
    IdentityConfig {
        dynamic_metadata,
        ..IdentityConfig::default()
    }
}

fn mutation(verdict: &Verdict) -> &HeaderMutation {
    match verdict {
        Verdict::Allow { mutation, .. } => mutation,
        Verdict::Deny(d) => panic!("denied: {d:?}"),
    }
}

#[test]
fn an_allow_sets_identity_removes_the_rest_and_strips_the_token_header() {
    let sources = [BEARER];
    let api = ["api".to_owned()];
    let token = token(json!({"sub": "alice", "role": ["a", "b"]}));
    let identity = Identity {
        provider: corp(&sources, &api),
        token: &token,
    };
    let config = identity_config(false);
    let strip = stripped(&config, Some(&found(&BEARER)));
    assert_eq!(strip, Some("authorization"));
    let verdict = allow(&config, Some(&identity), strip.as_slice()).unwrap();
    assert_eq!(
        mutation(&verdict),
        &HeaderMutation {
            set: vec![
                ("x-user-id".into(), "alice".into()),
                ("x-user-role".into(), "a,b".into()),
            ],
            remove: vec![
                "x-user-name".into(),
                "x-user-anonymous".into(),
                "authorization".into()
            ],
        }
    );
    assert!(matches!(verdict, Verdict::Allow { metadata: None, .. }));
    // Metadata only when asked for, named by the provider.
    let verdict = allow(&identity_config(true), Some(&identity), &[]).unwrap();
    let Verdict::Allow {
        metadata: Some((name, claims)),
        ..
    } = verdict
    else {
        panic!("no metadata: {verdict:?}");
    };
    assert_eq!(name, "corp");
    assert_eq!(claims.claims["sub"], "alice");
    // strip_authorization off keeps the token's header.
    let keep = IdentityConfig {
        strip_authorization: false,
        ..IdentityConfig::default()
    };
    assert_eq!(stripped(&keep, Some(&found(&BEARER))), None);
    // A cookie is not a header of its own: nothing to strip.
    let cookie = TokenSource::Cookie("session".into());
    assert_eq!(stripped(&config, Some(&found(&cookie))), None);
}

#[test]
fn a_claim_that_cannot_be_a_header_is_refused() {
    let sources = [BEARER];
    let api = ["api".to_owned()];
    for sub in [json!("alice\r\nx-admin: 1"), json!(["a,b", "c"])] {
        let token = token(json!({ "sub": sub }));
        let identity = Identity {
            provider: corp(&sources, &api),
            token: &token,
        };
        let refused = allow(&identity_config(false), Some(&identity), &[]).unwrap_err();
        assert_eq!(refused.header, "x-user-id");
    }
}

#[test]
fn shadow_mode_passes_identity_only_for_a_valid_token_short_of_claims() {
    let sources = [BEARER];
    let api = ["api".to_owned()];
    let token = token(json!({"sub": "alice"}));
    let identity = Identity {
        provider: corp(&sources, &api),
        token: &token,
    };
    let config = IdentityConfig {
        headers: vec![ClaimHeader {
            claim: "sub".into(),
            header: "x-user-id".into(),
        }],
        ..IdentityConfig::default()
    };
    let short = shadow_allow(
        &config,
        &Deny::InsufficientClaims,
        Some(&identity),
        &["authorization"],
    )
    .unwrap();
    assert_eq!(
        mutation(&short).set,
        vec![("x-user-id".to_owned(), "alice".to_owned())]
    );
    for deny in [
        Deny::Invalid(VerifyError::BadSignature),
        Deny::Invalid(VerifyError::WrongAudience),
        Deny::ProviderNotAccepted,
        Deny::DpopKeyMismatch,
        Deny::MissingToken,
    ] {
        let verdict = shadow_allow(&config, &deny, Some(&identity), &["authorization"]).unwrap();
        assert_eq!(
            mutation(&verdict),
            &HeaderMutation {
                set: vec![("x-user-anonymous".into(), "true".into())],
                remove: vec!["x-user-id".into(), "authorization".into()],
            },
            "{deny:?}"
        );
    }
    // A valid token short of claims whose claim cannot be a header: anonymous, not denied.
    let unsafe_token = self::token(json!({"sub": "a\nb"}));
    let unsafe_identity = Identity {
        provider: corp(&sources, &api),
        token: &unsafe_token,
    };
    let verdict = shadow_allow(
        &config,
        &Deny::InsufficientClaims,
        Some(&unsafe_identity),
        &[],
    )
    .unwrap();
    // Anonymous, then: no identity header, the marker set.
    assert_eq!(
        mutation(&verdict).set,
        vec![("x-user-anonymous".to_owned(), "true".to_owned())]
    );
}
