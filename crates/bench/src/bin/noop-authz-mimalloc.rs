//! The no-op floor with jwt-authz's allocator (mimalloc): the same server as `noop-authz`,
//! so that BENCHMARKS.md can show how much of the sidecar's cost against the floor is its
//! allocator and how much is its own work.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "noop-authz.rs"]
mod noop;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    noop::main()
}
