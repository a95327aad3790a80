//! An Envoy Wasm filter that does nothing: one root context, and a context per request
//! whose every callback is proxy-wasm's default (continue). `make bench` loads it beside
//! the jwt-authz filter (`filter/`) in the same Envoy, so the in-proxy rows can be read
//! against what any Wasm filter costs there: the VM calls Envoy makes for every request
//! (context creation, the header callbacks, the end of the stream) before the filter does
//! any work of its own. Built by `make wasm`; natively it is empty.

#[cfg(any(target_arch = "wasm32", clippy))]
mod envoy {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(Root));
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Pass))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    /// A request: proxy-wasm's defaults let every stage continue.
    struct Pass;

    impl Context for Pass {}

    impl HttpContext for Pass {}
}
