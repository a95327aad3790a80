use super::*;
use crate::sender::replay::proof_key;

/// A configuration with one DPoP provider whose proofs are accepted `max_age` (+ `leeway`)
/// after their `iat`, and the given replay store.
fn config(max_age: &str, leeway: &str, store: &str) -> Config {
    let yaml = format!(
        "providers:\n  - name: p\n    issuer: https://issuer.test\n    audiences: [api]\n    jwks: {{uri: \"https://issuer.test/jwks.json\"}}\n    dpop: {{mode: optional, max_age: {max_age}, leeway: {leeway}}}\ndpop:\n  replay_store: {store}\n"
    );
    Config::from_yaml(&yaml).expect("config")
}

const MEMORY: &str = "{memory: {max_entries: 100}}";
const T0: u64 = 1_000_000;

fn key(jti: &str) -> ProofKey {
    proof_key("https://issuer.test", "jkt", jti)
}

fn ttl(config: &Config) -> Duration {
    config.providers[0].dpop.replay_window()
}

#[tokio::test]
async fn a_window_change_keeps_every_proof_seen_both_ways() {
    let sixty = config("60s", "5s", MEMORY);
    let replay = Replay::start(&sixty, None, T0).unwrap().unwrap();
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&sixty), T0).await,
        Ok(())
    );

    // max_age 60s -> 61s: the proof already used is still refused ...
    let sixty_one = config("61s", "5s", MEMORY);
    let replay = Replay::start(&sixty_one, Some(&replay), T0 + 1)
        .unwrap()
        .unwrap();
    assert_eq!(
        replay
            .first_use(&key("a"), T0, ttl(&sixty_one), T0 + 1)
            .await,
        Err(Refusal::Replayed)
    );
    // ... and again once the change is reverted.
    let replay = Replay::start(&sixty, Some(&replay), T0 + 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&sixty), T0 + 2).await,
        Err(Refusal::Replayed)
    );
    assert_eq!(
        replay
            .first_use(&key("b"), T0 + 2, ttl(&sixty), T0 + 2)
            .await,
        Ok(())
    );
}

#[tokio::test]
async fn a_longer_window_never_accepts_a_proof_whose_entry_expired_under_the_shorter_one() {
    // Held 1 s (max_age 1s, leeway 0).
    let short = config("1s", "0s", MEMORY);
    let replay = Replay::start(&short, None, T0).unwrap().unwrap();
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&short), T0).await,
        Ok(())
    );
    let long = config("10s", "0s", MEMORY);
    let replay = Replay::start(&long, Some(&replay), T0).unwrap().unwrap();
    // Past the old entry's life (the memory store forgets on its own clock) ...
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // ... the proof is within the new window, but issued before the reload: refused.
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&long), T0 + 2).await,
        Err(Refusal::Stale)
    );
    // A proof issued after the reload has the whole new window.
    assert_eq!(
        replay
            .first_use(&key("b"), T0 + 1, ttl(&long), T0 + 9)
            .await,
        Ok(())
    );
    // Kept while any configuration (max_age up to 1h, leeway up to 5m) could accept the
    // old proofs; dropped after.
    let kept = Replay::start(&long, Some(&replay), T0 + 3900)
        .unwrap()
        .unwrap();
    assert_eq!(kept.epochs.len(), 1);
    let again = Replay::start(&long, Some(&replay), T0 + 3901)
        .unwrap()
        .unwrap();
    assert!(again.epochs.is_empty(), "{:?}", again.epochs);
}

#[tokio::test]
async fn a_replaced_store_is_still_asked_until_what_it_holds_expires() {
    let small = config("60s", "5s", "{memory: {max_entries: 10}}");
    let replay = Replay::start(&small, None, T0).unwrap().unwrap();
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&small), T0).await,
        Ok(())
    );

    let large = config("60s", "5s", "{memory: {max_entries: 1000}}");
    let replay = Replay::start(&large, Some(&replay), T0 + 1)
        .unwrap()
        .unwrap();
    assert_eq!(replay.retired.len(), 1);
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&large), T0 + 1).await,
        Err(Refusal::Replayed)
    );
    assert_eq!(
        replay
            .first_use(&key("b"), T0 + 1, ttl(&large), T0 + 1)
            .await,
        Ok(())
    );
    // 70 s later (the longest hold) the retired store is let go.
    let later = Replay::start(&large, Some(&replay), T0 + 1 + 71)
        .unwrap()
        .unwrap();
    assert!(later.retired.is_empty());
}

#[tokio::test]
async fn turning_dpop_off_and_on_again_forgets_nothing() {
    let on = config("60s", "5s", MEMORY);
    let replay = Replay::start(&on, None, T0).unwrap().unwrap();
    assert_eq!(replay.first_use(&key("a"), T0, ttl(&on), T0).await, Ok(()));
    let off = Config::from_yaml(
        "providers:\n  - name: p\n    issuer: https://issuer.test\n    audiences: [api]\n    jwks: {uri: \"https://issuer.test/jwks.json\"}\n",
    )
    .unwrap();
    let dormant = Replay::start(&off, Some(&replay), T0 + 1).unwrap();
    let replay = Replay::start(&on, dormant.as_ref(), T0 + 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        replay.first_use(&key("a"), T0, ttl(&on), T0 + 2).await,
        Err(Refusal::Replayed)
    );
    // Off, reloaded meanwhile, then on again with a much longer window: the proof seen
    // before DPoP was turned off is still refused (its entry is gone, its epoch is not).
    let still_off = Replay::start(&off, dormant.as_ref(), T0 + 200).unwrap();
    assert!(
        still_off.is_some(),
        "kept while any window could accept what it saw"
    );
    let longer = config("300s", "5s", MEMORY);
    let replay = Replay::start(&longer, still_off.as_ref(), T0 + 210)
        .unwrap()
        .unwrap();
    assert_eq!(
        replay
            .first_use(&key("a"), T0, ttl(&longer), T0 + 210)
            .await,
        Err(Refusal::Stale)
    );
    // Off for longer than any configuration accepts a proof (1h + 2 x 5m after it was
    // turned off): nothing is kept.
    assert!(
        Replay::start(&off, dormant.as_ref(), T0 + 1 + 4200)
            .unwrap()
            .is_some()
    );
    assert!(
        Replay::start(&off, dormant.as_ref(), T0 + 1 + 4201)
            .unwrap()
            .is_none()
    );
}

/// One provider's window changing is a change, even when the shortest and longest of all
/// stay the same (each Redis key carries its own provider's hold).
#[tokio::test]
async fn a_change_to_any_providers_window_records_an_epoch() {
    let three = |b: &str| {
        let provider = |name: &str, max_age: &str| {
            format!(
                "  - name: {name}\n    issuer: https://{name}.test\n    audiences: [api]\n    jwks: {{uri: \"https://{name}.test/jwks.json\"}}\n    dpop: {{mode: optional, max_age: {max_age}, leeway: 5s}}\n"
            )
        };
        Config::from_yaml(&format!(
            "providers:\n{}{}{}",
            provider("a", "30s"),
            provider("b", b),
            provider("c", "120s")
        ))
        .expect("config")
    };
    let before = Replay::start(&three("60s"), None, T0).unwrap().unwrap();
    let same = Replay::start(&three("60s"), Some(&before), T0 + 1)
        .unwrap()
        .unwrap();
    assert!(same.epochs.is_empty());
    let after = Replay::start(&three("90s"), Some(&before), T0 + 1)
        .unwrap()
        .unwrap();
    assert_eq!(after.epochs.len(), 1);
    // A proof issued before the reload, past the shortest window held then: refused.
    assert_eq!(
        after
            .first_use(&key("b1"), T0, Duration::from_secs(100), T0 + 36)
            .await,
        Err(Refusal::Stale)
    );
}
