//! The DPoP replay store (RFC 9449 §11.1): a proof is accepted once per window, in memory
//! for one replica and through a real `redis-server` (Debian's, installed by `make test`)
//! for several, and a store that cannot answer is an error, never a "first use".

use std::time::{Duration, Instant};

use crate::support::bins::free_port;
use crate::support::redis::Redis;
use crate::support::stack::debian_binary;
use jwt_authz::sender::replay::{MemoryStore, RedisStore, ReplayStore, StoreError, proof_key};

const WINDOW: Duration = Duration::from_secs(60);

#[tokio::test]
async fn memory_store_accepts_a_proof_once_and_refuses_when_full() {
    let store = ReplayStore::Memory(MemoryStore::new(WINDOW, 3));
    let a = proof_key("corp", "jkt-1", "jti-a");
    assert_eq!(store.first_use(&a, WINDOW).await, Ok(true));
    assert_eq!(store.first_use(&a, WINDOW).await, Ok(false));
    // The same jti under another key or provider is another proof.
    assert_eq!(
        store
            .first_use(&proof_key("corp", "jkt-2", "jti-a"), WINDOW)
            .await,
        Ok(true)
    );
    assert_eq!(
        store
            .first_use(&proof_key("partner", "jkt-1", "jti-a"), WINDOW)
            .await,
        Ok(true)
    );
    // Full: new proofs are refused, never old ones forgotten early.
    assert_eq!(
        store
            .first_use(&proof_key("corp", "jkt-1", "jti-d"), WINDOW)
            .await,
        Err(StoreError::Full(3))
    );
    assert_eq!(store.first_use(&a, WINDOW).await, Ok(false));
}

#[tokio::test]
async fn memory_store_forgets_after_the_window_and_frees_room() {
    let window = Duration::from_millis(200);
    let store = ReplayStore::Memory(MemoryStore::new(window, 2));
    let key = proof_key("corp", "jkt", "jti");
    assert_eq!(store.first_use(&key, window).await, Ok(true));
    assert_eq!(
        store
            .first_use(&proof_key("corp", "jkt", "other"), window)
            .await,
        Ok(true)
    );
    assert!(
        store
            .first_use(&proof_key("corp", "jkt", "third"), window)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Both expired: the same proof is new again, and there is room.
    assert_eq!(store.first_use(&key, window).await, Ok(true));
    assert_eq!(
        store
            .first_use(&proof_key("corp", "jkt", "third"), window)
            .await,
        Ok(true)
    );
}

#[test]
fn proof_keys_do_not_collide_across_field_boundaries() {
    assert_ne!(proof_key("a", "bc", "d"), proof_key("ab", "c", "d"));
    assert_ne!(proof_key("a", "b", "cd"), proof_key("a", "bc", "d"));
    assert_eq!(proof_key("a", "b", "c"), proof_key("a", "b", "c"));
}

fn replica(url: &str) -> ReplayStore {
    ReplayStore::Redis(
        RedisStore::new(url, "jwt-authz:dpop:", Duration::from_millis(500), false).expect("store"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_accept_a_proof_once() {
    let Some(binary) = debian_binary("redis-server") else {
        return;
    };
    let mut redis = Redis::start(&binary, free_port());
    let (one, two) = (replica(&redis.url()), replica(&redis.url()));
    let key = proof_key("corp", "jkt-1", "jti-1");
    assert_eq!(one.first_use(&key, WINDOW).await, Ok(true));
    assert_eq!(two.first_use(&key, WINDOW).await, Ok(false));
    assert_eq!(one.first_use(&key, WINDOW).await, Ok(false));
    // Concurrent first uses of one fresh proof: exactly one wins.
    let fresh = proof_key("corp", "jkt-1", "jti-race");
    let results = futures::future::join_all((0..16).map(|i| {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        async move { store.first_use(&fresh, WINDOW).await }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| **r == Ok(true)).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // The window is Redis's expiry.
    let short = proof_key("corp", "jkt-1", "jti-short");
    assert_eq!(
        one.first_use(&short, Duration::from_millis(200)).await,
        Ok(true)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        two.first_use(&short, Duration::from_millis(200)).await,
        Ok(true)
    );

    // Redis gone: an error within the timeout, never a first use.
    let port = redis.port;
    redis.stop();
    let started = Instant::now();
    let down = one
        .first_use(&proof_key("corp", "jkt-1", "jti-2"), WINDOW)
        .await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        two.first_use(&key, WINDOW).await,
        Err(StoreError::Unavailable(_))
    ));

    // Back (empty, persistence off): the replicas reconnect by themselves.
    let _redis = Redis::start(&binary, port);
    let start = Instant::now();
    let again = proof_key("corp", "jkt-1", "jti-3");
    loop {
        match one.first_use(&again, WINDOW).await {
            Ok(first) => {
                assert!(first);
                break;
            }
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "no reconnect: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(two.first_use(&again, WINDOW).await, Ok(false));
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_from_the_start() {
    // Nothing listens on this port; start-up did not need the store.
    let store = replica(&format!("redis://127.0.0.1:{}/", free_port()));
    let result = store.first_use(&proof_key("p", "k", "j"), WINDOW).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(matches!(
        RedisStore::new("not a url", "p:", Duration::from_millis(100), false),
        Err(StoreError::Unavailable(_))
    ));
}

/// A Redis that may evict keys with a TTL before it (every proof's key has one) is refused:
/// 503 with the reason, never "first use" of a proof it may have forgotten. Read at the
/// first use and again while unsafe; `noeviction`, or no memory limit, is safe; the
/// override skips the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_proofs_early_is_refused() {
    let Some(binary) = debian_binary("redis-server") else {
        return;
    };
    let redis = Redis::start_with(
        &binary,
        free_port(),
        &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
    );
    let store = replica(&redis.url());
    let key = proof_key("corp", "jkt", "jti-evict");
    for policy in [
        "allkeys-lru",
        "volatile-ttl",
        "volatile-lru",
        "allkeys-random",
    ] {
        redis.config_set("maxmemory-policy", policy);
        // An unsafe verdict is read again within about a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        match store.first_use(&key, WINDOW).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(
                    message.contains(&format!("maxmemory-policy {policy}"))
                        && message.contains("noeviction"),
                    "{message}"
                );
            }
            other => panic!("{policy}: {other:?}"),
        }
    }
    redis.config_set("maxmemory-policy", "noeviction");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.first_use(&key, WINDOW).await, Ok(true));
    assert_eq!(store.first_use(&key, WINDOW).await, Ok(false));

    // No memory limit: nothing is ever evicted, whatever the policy says.
    redis.config_set("maxmemory-policy", "allkeys-lru");
    redis.config_set("maxmemory", "0");
    let fresh = replica(&redis.url());
    assert_eq!(
        fresh
            .first_use(&proof_key("corp", "jkt", "j2"), WINDOW)
            .await,
        Ok(true)
    );
    // The override, for servers where CONFIG is disabled.
    redis.config_set("maxmemory", "64mb");
    let trusting = ReplayStore::Redis(
        RedisStore::new(
            &redis.url(),
            "jwt-authz:dpop:",
            Duration::from_millis(500),
            true,
        )
        .expect("store"),
    );
    assert_eq!(
        trusting
            .first_use(&proof_key("corp", "jkt", "j3"), WINDOW)
            .await,
        Ok(true)
    );
    assert!(fresh_unsafe(&redis.url()).await);
}

/// A new store against an unsafe server refuses at its first use.
async fn fresh_unsafe(url: &str) -> bool {
    matches!(
        replica(url)
            .first_use(&proof_key("corp", "jkt", "j4"), WINDOW)
            .await,
        Err(StoreError::Unavailable(_))
    )
}

#[test]
fn only_noeviction_or_no_limit_is_safe() {
    use jwt_authz::sender::replay::eviction_verdict;
    assert!(eviction_verdict("noeviction", "1073741824").is_ok());
    assert!(eviction_verdict("allkeys-lru", "0").is_ok());
    for policy in [
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        assert!(eviction_verdict(policy, "100mb").is_err(), "{policy}");
    }
}
