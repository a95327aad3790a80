//! Fetching one list: the conditional GET, its limits, verifying the Status List Token
//! with the provider's keys (§8.3), and what is held after.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::unix_now;
use crate::keys::fetch::{self, FetchError};
use crate::verify::{self};
use jwt_authz_jose::status_list::{self};

use super::{FetchState, Held, List, ListError, MEDIA_TYPE, StatusLists, refresh_at, usable_until};

impl StatusLists {
    /// Fetches and verifies `list`; on success it replaces the held one. On failure the
    /// held list stays (it is used until `usable_until`) and the backoff grows.
    pub(super) async fn fetch_locked(
        &self,
        list: &List,
        state: &mut FetchState,
    ) -> Option<Arc<Held>> {
        let held = list.held.load_full();
        let span = self.telemetry.fetch_span(
            "jwt-authz status list fetch",
            self.provider_name(),
            &list.uri,
        );
        let fetched = self.fetch(&list.uri, held.as_deref()).await;
        match &fetched {
            Ok((_, outcome)) => span.finish(outcome, None),
            Err(error) => span.finish(error.outcome(), Some(error)),
        }
        match fetched {
            Ok((held, outcome)) => {
                state.failures = 0;
                state.retry_at = None;
                self.metrics
                    .record_status_list_fetch(self.provider_name(), outcome);
                tracing::debug!(provider = %self.provider_name(), uri = %list.uri, outcome, entries = held.list.len(), ttl = ?held.ttl, "status list fetched");
                let held = Arc::new(held);
                list.held.store(Some(Arc::clone(&held)));
                self.write_snapshot(list, &held);
                Some(held)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let wait = fetch::retry_delay(
                    state.failures,
                    self.config().max_ttl.min(Duration::from_secs(60)),
                );
                state.retry_at = Some(Instant::now() + wait);
                self.metrics
                    .record_status_list_fetch(self.provider_name(), error.outcome());
                let usable_until = held.as_ref().map(|h| h.usable_until);
                tracing::warn!(provider = %self.provider_name(), uri = %list.uri, %error, ?usable_until, "status list fetch failed; keeping the list held until max_stale");
                if held.is_some() {
                    return None;
                }
                // Nothing held (a restart): the snapshot, used as if just held.
                let held = Arc::new(self.snapshot_held(&list.uri).await?);
                list.held.store(Some(Arc::clone(&held)));
                Some(held)
            }
        }
    }

    /// One GET of the list token, verified (§8.3 steps 2 to 5).
    async fn fetch(
        &self,
        uri: &str,
        held: Option<&Held>,
    ) -> Result<(Held, &'static str), ListError> {
        let config = self.config();
        let now = unix_now();
        // Revalidate the token held only while it has not expired: a 304 cannot renew it.
        let revalidate = held.filter(|h| h.etag.is_some() && h.exp.is_none_or(|exp| now < exp));
        let mut request = self
            .client
            .get(uri)
            .header(http::header::ACCEPT, MEDIA_TYPE)
            .timeout(config.fetch_timeout);
        if let Some(etag) = revalidate.and_then(|h| h.etag.as_deref()) {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        // The list itself, not a copy a shared cache has held for up to its max-age.
        request = request.header(http::header::CACHE_CONTROL, "no-cache");
        let response = request.send().await.map_err(FetchError::from)?;
        let status = response.status();
        if status == http::StatusCode::NOT_MODIFIED
            && let Some(held) = revalidate
        {
            return Ok((self.renewed(held, now), "not_modified"));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()).into());
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned);
        let body = fetch::read_body(response, config.max_bytes).await?;
        let token = std::str::from_utf8(&body)
            .map_err(|_| ListError::NotText)?
            .trim();
        Ok((self.accept(uri, token, etag, now, held).await?, "ok"))
    }

    /// A list token for `uri`, fetched (or snapshotted) at `fetched_at`, verified and read
    /// (§8.3 steps 3 to 5); `held` is the list it would replace.
    pub(super) async fn accept(
        &self,
        uri: &str,
        token: &str,
        etag: Option<String>,
        fetched_at: u64,
        held: Option<&Held>,
    ) -> Result<Held, ListError> {
        let config = self.config();
        let now = unix_now();
        // Keys are the provider's own (§11.3); the token's header cannot bring its own.
        let claims = verify::verify_status_list_token(&self.keys, token).await?;
        let (list, lifetime) =
            status_list::check_token_claims(&claims, uri, now, config.max_bytes)?;
        // §8.3 step 4b (the relying party's freshness policy): a list issued in the future
        // (beyond the provider's leeway) would, once held, make every correct list after
        // it look older and be refused.
        if lifetime.iat > now.saturating_add(self.keys.provider().leeway.as_secs()) {
            return Err(ListError::FromTheFuture(lifetime.iat));
        }
        if let Some(held) = held
            && lifetime.iat < held.iat
        {
            // An older list (a stale cache, or a replayed response) would un-revoke tokens.
            return Err(ListError::Older {
                fetched: lifetime.iat,
                held: held.iat,
            });
        }
        let ttl = lifetime
            .ttl
            .map_or(config.default_ttl, Duration::from_secs)
            .clamp(config.min_ttl, config.max_ttl);
        Ok(Held {
            list: Arc::new(list),
            iat: lifetime.iat,
            usable_until: usable_until(fetched_at, config.max_stale, lifetime.exp),
            fetched_at,
            refresh_at: refresh_at(ttl, config.max_stale, now, lifetime.exp),
            etag,
            exp: lifetime.exp,
            ttl,
            token: token.into(),
        })
    }
}
