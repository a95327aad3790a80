//! Links the module with immediate binding (`-z now`): every Envoy callback it calls is
//! resolved when Envoy loads it, so an Envoy without one of them (another ABI) refuses to
//! load the module, and its configuration, at once, instead of the process aborting at the
//! first request that reaches the missing callback.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
}
