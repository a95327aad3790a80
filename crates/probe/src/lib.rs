//! A minimal HTTP/1.1 GET for container health checks: distroless and locally assembled
//! images have no shell or curl, so each binary can probe its own endpoint
//! (`jwt-authz --probe URL`, `issuer probe URL`, `sample-service --probe URL`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Whether `GET url` answers 200 within `timeout`. Only `http://host:port/path` URLs.
pub fn ok(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (rest, "/".to_owned()),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: http-probe\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head[9..12] {
        b"200" => Ok(()),
        other => Err(format!("{url} answered {}", String::from_utf8_lossy(other))),
    }
}

/// Runs the probe and turns it into a process exit code, printing why it failed.
pub fn exit_code(url: &str) -> std::process::ExitCode {
    match ok(url, Duration::from_secs(3)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        format!("http://{addr}/readyz")
    }

    #[test]
    fn ok_only_on_200() {
        assert_eq!(ok(&serve_once("200 OK"), Duration::from_secs(2)), Ok(()));
        assert!(
            ok(
                &serve_once("503 Service Unavailable"),
                Duration::from_secs(2)
            )
            .is_err()
        );
        assert!(ok("https://example.test/", Duration::from_secs(1)).is_err());
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(ok(&format!("http://{closed}/"), Duration::from_secs(1)).is_err());
    }
}
