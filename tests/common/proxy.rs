//! A unix-socket proxy in front of a real engine that shows each HTTP request line to the
//! test before forwarding it: to record what vakt asked, or to hold a request back.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const METHODS: [&str; 6] = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "PATCH "];

/// Listens on `front` and forwards every connection to `back`; `on_request` sees the request
/// line (`POST /swarm/join HTTP/1.1`) of each request before it is forwarded.
pub fn forward(front: &Path, back: PathBuf, on_request: impl Fn(&str) + Send + Sync + 'static) {
    let _ = std::fs::remove_file(front);
    let listener = UnixListener::bind(front).expect("bind the proxy");
    let on_request = Arc::new(on_request);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(engine) = UnixStream::connect(&back) else { continue };
            let (mut from_client, mut to_engine) =
                (client.try_clone().expect("clone"), engine.try_clone().expect("clone"));
            let (mut from_engine, mut to_client) = (engine, client);
            let on_request = Arc::clone(&on_request);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let first = text.lines().next().unwrap_or("");
                    if METHODS.iter().any(|m| first.starts_with(m)) {
                        on_request(first);
                    }
                    if to_engine.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_engine, &mut to_client);
            });
        }
    });
}
