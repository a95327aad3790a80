//! A real `redis-server` (Debian's, installed by `make test`) for the replay-store tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, persistence off, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start(binary: &std::path::Path, port: u16) -> Self {
        Self::start_with(binary, port, &[])
    }

    /// [`Redis::start`] with more `redis-server` arguments (`--maxmemory-policy`, ...).
    pub fn start_with(binary: &std::path::Path, port: u16, args: &[&str]) -> Self {
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `CONFIG SET name value`, over a plain connection speaking RESP.
    pub fn config_set(&self, name: &str, value: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let mut command = String::from("*4\r\n");
        for part in ["CONFIG", "SET", name, value] {
            command.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        stream.write_all(command.as_bytes()).expect("send");
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).expect("reply");
        assert_eq!(&reply, b"+OK\r\n", "CONFIG SET {name} {value}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
