//! The locally built images the container tests run, built on demand.

use std::path::Path;
use std::process::{Command, Stdio};

/// Built by `scripts/docker-local-images.sh` from this workspace's binaries.
pub const IMAGES: &[&str] = &[
    "jwt-authz:latest",
    "jwt-authz-issuer:latest",
    "jwt-authz-sample-service:latest",
    "jwt-authz-envoy:1.40.0-local",
];

fn missing_image() -> Option<&'static str> {
    IMAGES.iter().copied().find(|image| {
        !Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Builds the images unless they are all present (never pulls anything).
pub fn ensure_images() {
    if missing_image().is_none() {
        return;
    }
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("scripts/docker-local-images.sh");
    let status = Command::new(script)
        .status()
        .expect("run docker-local-images.sh");
    assert!(status.success(), "building the local images failed");
    if let Some(image) = missing_image() {
        panic!("{image} still missing after the build");
    }
}
