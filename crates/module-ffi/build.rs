//! Links the module with immediate binding (`-z now`): every Envoy callback it calls is
//! resolved when Envoy loads it, so an Envoy without one of them (another ABI) refuses to
//! load the module, and its configuration, at once, instead of the process aborting at the
//! first request that reaches the missing callback.
fn main() {
    // GNU ld and lld on Linux (what Envoy's builds run on); other linkers spell it otherwise.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    }
}
