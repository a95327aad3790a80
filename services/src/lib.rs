//! Sample resource services. They read identity only from the `x-user-*` headers that
//! jwt-authz injects through Envoy, and answer 401 when those are missing (defence in depth:
//! a request that bypassed the proxy gets nothing).
//!
//! - users: `GET /api/users/me`, `GET /api/users` (admins only, by a jwt-authz rule)
//! - orders: `GET`/`POST /api/orders`, the caller's own orders, in memory
//! - feed: `GET /api/feed/hierarchical`, and `GET /api/feed/highlights` (an optional route:
//!   what everyone sees when jwt-authz says the caller is anonymous, with a section of the
//!   caller's own when it names one)
//! - mcp ([`mcp`]): `POST /mcp`, a Model Context Protocol server on the Streamable HTTP
//!   transport, with tools `whoami`, `echo`, `add_note`, `list_notes` (the caller's own) and
//!   `list_all_notes` (role admin)

pub mod mcp;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Which routes an instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Users,
    Orders,
    Feed,
    Mcp,
    All,
}

/// The caller, as jwt-authz described it.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub id: String,
    pub username: Option<String>,
    pub role: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let Some(id) = header("x-user-id") else {
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthenticated", "error_description": "no identity"})),
            )
                .into_response());
        };
        Ok(Identity {
            id,
            username: header("x-user-name"),
            role: header("x-user-role"),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub item: String,
    pub quantity: u32,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    item: String,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default)]
struct Store {
    next_order: u64,
    orders: HashMap<String, Vec<Order>>,
    /// Everyone seen, for the admin listing.
    seen: BTreeMap<String, Identity>,
}

#[derive(Debug, Clone, Default)]
pub struct AppState {
    store: Arc<Mutex<Store>>,
    notes: mcp::Notes,
}

impl FromRef<AppState> for mcp::Notes {
    fn from_ref(state: &AppState) -> Self {
        state.notes.clone()
    }
}

impl AppState {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn saw(&self, who: &Identity) {
        self.store().seen.insert(who.id.clone(), who.clone());
    }
}

pub fn router(service: Service) -> Router {
    let mut app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    if matches!(service, Service::Users | Service::All) {
        app = app
            .route("/api/users/me", get(me))
            .route("/api/users", get(list_users));
    }
    if matches!(service, Service::Orders | Service::All) {
        app = app.route("/api/orders", get(list_orders).post(create_order));
    }
    if matches!(service, Service::Feed | Service::All) {
        app = app
            .route("/api/feed/hierarchical", get(feed))
            .route("/api/feed/highlights", get(highlights));
    }
    if matches!(service, Service::Mcp | Service::All) {
        app = app.merge(mcp::routes());
    }
    app.with_state(AppState::default())
}

async fn me(State(state): State<AppState>, who: Identity) -> Json<Identity> {
    state.saw(&who);
    Json(who)
}

async fn list_users(State(state): State<AppState>, who: Identity) -> Response {
    state.saw(&who);
    // jwt-authz enforces the admin rule; the service checks again rather than trust routing.
    if who.role.as_deref() != Some("admin") {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "forbidden", "error_description": "admins only"})),
        )
            .into_response();
    }
    let users: Vec<Identity> = state.store().seen.values().cloned().collect();
    Json(json!({ "users": users })).into_response()
}

async fn list_orders(State(state): State<AppState>, who: Identity) -> Json<serde_json::Value> {
    state.saw(&who);
    let orders = state
        .store()
        .orders
        .get(&who.id)
        .cloned()
        .unwrap_or_default();
    Json(json!({ "owner": who.id, "orders": orders }))
}

async fn create_order(
    State(state): State<AppState>,
    who: Identity,
    body: Result<Json<NewOrder>, axum::extract::rejection::JsonRejection>,
) -> Response {
    state.saw(&who);
    let Ok(Json(new)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "expected {\"item\": ..., \"quantity\": ...}"})),
        )
            .into_response();
    };
    if new.item.is_empty() || new.item.len() > 200 || new.quantity == 0 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "item must be 1-200 characters, quantity at least 1"})),
        )
            .into_response();
    }
    let mut store = state.store();
    store.next_order += 1;
    let order = Order {
        id: store.next_order,
        item: new.item,
        quantity: new.quantity,
    };
    store.orders.entry(who.id).or_default().push(order.clone());
    (StatusCode::CREATED, Json(order)).into_response()
}

async fn feed(State(state): State<AppState>, who: Identity) -> Json<serde_json::Value> {
    state.saw(&who);
    let name = who.username.clone().unwrap_or_else(|| who.id.clone());
    Json(json!({
        "viewer": who,
        "sections": [
            {"title": format!("For {name}"), "items": [
                {"title": "Welcome back", "children": [{"title": "Your orders"}, {"title": "Your profile"}]}
            ]},
            {"title": "Everyone", "items": [{"title": "Release notes", "children": []}]}
        ]
    }))
}

/// The caller of an optional route: anonymous when jwt-authz says so (`x-user-anonymous:
/// true`), the identity otherwise. A request with neither did not come through jwt-authz
/// and gets 401.
pub enum Viewer {
    Anonymous,
    Known(Identity),
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let anonymous = parts
            .headers
            .get("x-user-anonymous")
            .is_some_and(|v| v.as_bytes() == b"true");
        if anonymous {
            return Ok(Viewer::Anonymous);
        }
        Identity::from_request_parts(parts, state)
            .await
            .map(Viewer::Known)
    }
}

async fn highlights(State(state): State<AppState>, viewer: Viewer) -> Json<serde_json::Value> {
    let everyone = json!({"title": "Everyone", "items": [{"title": "Release notes"}, {"title": "Status page"}]});
    match viewer {
        Viewer::Anonymous => Json(json!({
            "anonymous": true,
            "sections": [everyone, {"title": "Sign in to see your orders"}],
        })),
        Viewer::Known(who) => {
            state.saw(&who);
            let name = who.username.clone().unwrap_or_else(|| who.id.clone());
            Json(json!({
                "anonymous": false,
                "viewer": who,
                "sections": [{"title": format!("For {name}"), "items": [{"title": "Your orders"}]}, everyone],
            }))
        }
    }
}
