//! The nginx resource against the real nginx: a private config, pid file and logs, listening
//! on a loopback high port, proxying to a test upstream on loopback. The machine's own nginx
//! and /etc/nginx are never touched: the profile's `config` points into a temporary tree.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

fn ready() -> bool {
    require("root", is_root()) && require("nginx and curl", has("nginx") && has("curl"))
}

/// A loopback HTTP/1.1 upstream that counts accepted connections; `/slow` answers after 2 s.
struct Upstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(stream));
            }
        });
        Upstream { port, accepted }
    }
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut sink = vec![0u8; 64 * 1024];
        let mut left = length;
        while left > 0 {
            let take = left.min(sink.len());
            let n = reader.read(&mut sink[..take]).unwrap_or(0);
            if n == 0 {
                return;
            }
            left -= n;
        }
        if request.contains("/slow") {
            std::thread::sleep(Duration::from_secs(2));
        }
        let body = format!("got {length}");
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

struct Site {
    dir: tempfile::TempDir,
    port: u16,
    upstream: Upstream,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc/nginx")).expect("mkdir");
        std::fs::copy("/etc/nginx/mime.types", dir.path().join("etc/nginx/mime.types")).expect("mime.types");
        Site { dir, port: free_port(), upstream: Upstream::start() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> String {
        self.path("etc/nginx/nginx.conf").display().to_string()
    }

    /// A profile whose nginx lives in this site's tree; `extra` adds or overrides keys.
    fn profile(&self, extra: &str) -> String {
        let t = self.dir.path().display();
        let mut body = format!(
            "[nginx]\nconfig = \"{t}/etc/nginx/nginx.conf\"\npid = \"{t}/nginx.pid\"\nerror_log = \"{t}/error.log\"\naccess_log = \"{t}/access.log\"\nlisten = \"127.0.0.1:{}\"\nupstream = [\"127.0.0.1:{}\"]\n",
            self.port, self.upstream.port
        );
        for line in extra.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            body = body.lines().filter(|l| !l.starts_with(&format!("{key} "))).map(|l| format!("{l}\n")).collect();
            body.push_str(line);
            body.push('\n');
        }
        let p = self.path("profile.toml");
        std::fs::write(&p, body).expect("profile");
        p.display().to_string()
    }

    fn apply(&self, profile: &str) -> Run {
        run(vakt().args(["apply", "--only", "nginx", "--format", "json", "-p", profile]))
    }

    fn start_nginx(&self) {
        let out = run(std::process::Command::new("nginx").args(["-c", &self.config()]));
        assert_eq!(out.code, 0, "nginx starts: {}", out.stderr);
        // `nginx` returns once it has forked; the master writes its pid file and starts its
        // workers after that (on a busy machine, more than 200 ms later).
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let pid = std::fs::read_to_string(self.path("nginx.pid")).unwrap_or_default();
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", pid.trim()));
            if !pid.trim().is_empty() && children.is_ok_and(|c| !c.trim().is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx wrote no pid file or started no worker within 10s");
    }

    fn curl(&self, args: &[&str], path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let out = run(std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}\n", "--max-time", "20"])
            .args(args)
            .arg(url));
        out.stdout.trim().to_string()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.path("nginx.pid"))
            && !pid.trim().is_empty()
        {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn golden_default_config_passes_nginx_t() {
    if !ready() {
        return;
    }
    let site = Site::new();
    let out = run(vakt().arg("--root").arg(site.dir.path()).args([
        "apply",
        "-p",
        "builtin:openfaas-swarm",
        "--only",
        "nginx",
    ]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rendered = std::fs::read_to_string(site.path("etc/nginx/nginx.conf")).expect("rendered");
    let golden = repo("tests/golden/nginx.conf");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &rendered).expect("write golden");
    }
    assert_eq!(rendered, std::fs::read_to_string(golden).expect("golden"));
    let t = run(std::process::Command::new("nginx").args(["-t", "-c", &site.config()]));
    assert_eq!(t.code, 0, "{}", t.stderr);
}

#[test]
fn quartet_from_no_file_stock_file_and_edited_file() {
    if !ready() {
        return;
    }
    for start in ["none", "stock", "edited"] {
        let site = Site::new();
        let profile = site.profile("");
        match start {
            "stock" => {
                std::fs::copy("/etc/nginx/nginx.conf", site.path("etc/nginx/nginx.conf")).expect("stock file");
            }
            "edited" => {
                assert_eq!(site.apply(&profile).code, 0);
                site.start_nginx();
                let conf = std::fs::read_to_string(site.path("etc/nginx/nginx.conf")).expect("conf");
                std::fs::write(
                    site.path("etc/nginx/nginx.conf"),
                    conf.replace("keepalive_requests 10000;", "keepalive_requests 100;"),
                )
                .expect("edit");
            }
            _ => {}
        }
        let check = run(vakt().args(["check", "--only", "nginx", "--format", "json", "-p", &profile]));
        assert_eq!(check.code, 1, "{start}: drift\n{}", check.stdout);
        let apply = site.apply(&profile);
        assert_eq!(apply.code, 0, "{start}: {}{}", apply.stdout, apply.stderr);
        assert_eq!(ids_with(&json(&apply), "changed"), vec!["nginx.config"], "{start}");
        if start == "edited" {
            let ran = json(&apply)["commands"].to_string();
            assert!(ran.contains("kill -HUP"), "the running master vakt observed is signalled: {ran}");
            assert_eq!(site.curl(&[], "/"), "200", "still serving after the reload");
        }
        if start != "none" {
            assert!(site.path("etc/nginx/nginx.conf.vakt-prev").exists(), "{start}: previous file kept");
        }
        let again = site.apply(&profile);
        assert!(ids_with(&json(&again), "changed").is_empty(), "{start}: no-op");
        let ran = json(&again)["commands"].to_string();
        assert!(!ran.contains("reload") && !ran.contains("kill"), "{start}: no reload on a no-op: {ran}");
        assert_eq!(run(vakt().args(["check", "--only", "nginx", "-p", &profile])).code, 0, "{start}: check passes");
    }
}

#[test]
fn a_config_nginx_rejects_never_goes_live() {
    if !ready() {
        return;
    }
    let site = Site::new();
    let good = site.profile("");
    assert_eq!(site.apply(&good).code, 0);
    site.start_nginx();
    let live = std::fs::read(site.path("etc/nginx/nginx.conf")).expect("live");
    // A name that does not resolve passes the profile (it is a valid HOST:PORT) but not nginx -t.
    let bad = site.profile("upstream = [\"gateway.invalid:8080\"]");
    let out = run(vakt().args(["apply", "--only", "nginx", "-p", &bad]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("nginx -t rejects") && out.stdout.contains("host not found"),
        "nginx's own message:\n{}",
        out.stdout
    );
    assert_eq!(std::fs::read(site.path("etc/nginx/nginx.conf")).expect("live"), live, "live file unchanged");
    assert_eq!(site.curl(&[], "/"), "200", "nginx keeps serving");
}

#[test]
fn proxy_read_timeout_decides_between_504_and_success() {
    if !ready() {
        return;
    }
    let site = Site::new();
    assert_eq!(site.apply(&site.profile("proxy_read_timeout = \"1s\"")).code, 0);
    site.start_nginx();
    assert_eq!(site.curl(&[], "/slow"), "504");
    let out = site.apply(&site.profile("proxy_read_timeout = \"3s\""));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(site.curl(&[], "/slow"), "200", "{}", out.stdout);
}

#[test]
fn upstream_keepalive_reuses_connections() {
    if !ready() {
        return;
    }
    let site = Site::new();
    assert_eq!(site.apply(&site.profile("")).code, 0);
    site.start_nginx();
    let before = site.upstream.accepted.load(Ordering::SeqCst);
    let url = format!("http://127.0.0.1:{}/n/[1-100]", site.port);
    let out = run(std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}\n", &url]));
    assert_eq!(out.stdout.lines().filter(|l| *l == "200").count(), 100, "{}", out.stdout);
    let used = site.upstream.accepted.load(Ordering::SeqCst) - before;
    assert!(used <= 5, "100 requests used {used} upstream connections");
}

#[test]
fn client_max_body_size_admits_or_refuses_a_20_mb_body() {
    if !ready() {
        return;
    }
    let site = Site::new();
    let body = site.path("body.bin");
    std::fs::write(&body, vec![b'x'; 20 * 1024 * 1024]).expect("body");
    let data = format!("@{}", body.display());
    assert_eq!(site.apply(&site.profile("client_max_body_size = \"50m\"")).code, 0);
    site.start_nginx();
    assert_eq!(site.curl(&["--data-binary", &data], "/upload"), "200");
    assert_eq!(site.apply(&site.profile("client_max_body_size = \"1m\"")).code, 0);
    assert_eq!(site.curl(&["--data-binary", &data], "/upload"), "413");
}

/// Killed between writing nginx.conf and reloading: a rerun reloads, though the file matches.
#[cfg(feature = "failpoints")]
#[test]
fn killed_before_the_reload_a_rerun_reloads() {
    use std::os::unix::process::ExitStatusExt;
    if !ready() {
        return;
    }
    let site = Site::new();
    assert_eq!(site.apply(&site.profile("proxy_read_timeout = \"1s\"")).code, 0);
    site.start_nginx();
    let longer = site.profile("proxy_read_timeout = \"3s\"");
    let status = vakt()
        .args(["apply", "--only", "nginx", "-p", &longer])
        .env("VAKT_FAILPOINT", "nginx-reload")
        .output()
        .expect("runs")
        .status;
    assert_eq!(status.signal(), Some(9));
    assert!(
        std::fs::read_to_string(site.path("etc/nginx/nginx.conf")).expect("conf").contains("proxy_read_timeout 3s;")
    );
    assert_eq!(site.curl(&[], "/slow"), "504", "nginx still runs the old config");
    let rerun = site.apply(&longer);
    assert_eq!(ids_with(&json(&rerun), "changed"), vec!["nginx.reload"], "{}", rerun.stdout);
    assert_eq!(site.curl(&[], "/slow"), "200");
    assert!(ids_with(&json(&site.apply(&longer)), "changed").is_empty());
}

#[test]
fn other_sites_keep_working_beside_the_gateway() {
    if !ready() {
        return;
    }
    let site = Site::new();
    let other =
        format!("server {{\n    listen 127.0.0.1:{};\n    server_name other.test;\n    return 418;\n}}\n", site.port);
    std::fs::create_dir_all(site.path("etc/nginx/sites-enabled")).expect("mkdir");
    std::fs::create_dir_all(site.path("etc/nginx/conf.d")).expect("mkdir");
    std::fs::write(site.path("etc/nginx/sites-enabled/other.test"), &other).expect("other site");
    std::fs::write(
        site.path("etc/nginx/conf.d/limits.conf"),
        "limit_req_zone $binary_remote_addr zone=one:1m rate=5r/s;\n",
    )
    .expect("snippet");
    let profile = site.profile("");
    let apply = site.apply(&profile);
    assert_eq!(apply.code, 0, "validated with the other site in place: {}", apply.stdout);
    site.start_nginx();
    assert_eq!(site.curl(&["-H", "Host: other.test"], "/"), "418", "the other site answers its name");
    assert_eq!(site.curl(&[], "/"), "200", "the gateway is the default server");
    assert_eq!(std::fs::read_to_string(site.path("etc/nginx/sites-enabled/other.test")).expect("kept"), other);
    // Turned off, the other site is gone from nginx's view.
    let apply = site.apply(&site.profile("include_sites = false"));
    assert_eq!(apply.code, 0, "{}", apply.stdout);
    assert_eq!(site.curl(&["-H", "Host: other.test"], "/"), "200", "only the gateway is left");
}

#[test]
fn debians_placeholder_site_is_unlinked_not_deleted() {
    if !ready() {
        return;
    }
    let site = Site::new();
    let placeholder = format!("server {{\n    listen 127.0.0.1:{} default_server;\n    return 404;\n}}\n", site.port);
    std::fs::create_dir_all(site.path("etc/nginx/sites-available")).expect("mkdir");
    std::fs::create_dir_all(site.path("etc/nginx/sites-enabled")).expect("mkdir");
    std::fs::write(site.path("etc/nginx/sites-available/default"), &placeholder).expect("placeholder");
    let link = site.path("etc/nginx/sites-enabled/default");
    std::os::unix::fs::symlink(site.path("etc/nginx/sites-available/default"), &link).expect("link");

    // Kept, it claims the default server too: nginx -t refuses and nothing is written.
    let keep = site.profile("default_site = \"keep\"");
    let out = run(vakt().args(["apply", "--only", "nginx", "-p", &keep]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("duplicate default server"), "nginx's own reason: {}", out.stdout);
    assert!(!site.path("etc/nginx/nginx.conf").exists(), "nothing written");

    let profile = site.profile("");
    let check = run(vakt().args(["check", "--only", "nginx", "--format", "json", "-p", &profile]));
    assert_eq!(changes(&json(&check), "drift").len(), 2, "{}", check.stdout);
    let apply = site.apply(&profile);
    assert_eq!(apply.code, 0, "{}", apply.stdout);
    assert_eq!(ids_with(&json(&apply), "changed"), vec!["nginx.default-site", "nginx.config"]);
    assert!(link.symlink_metadata().is_err(), "the link is gone");
    assert_eq!(std::fs::read_to_string(site.path("etc/nginx/sites-available/default")).expect("kept"), placeholder);
    site.start_nginx();
    assert_eq!(site.curl(&[], "/"), "200", "the gateway, not the placeholder, answers");
    assert_eq!(run(vakt().args(["check", "--only", "nginx", "-p", &profile])).code, 0);
}

/// Issue 23: nginx's warnings are findings (`-q` used to hide "conflicting server name ...
/// ignored" while the gateway lost its name to another site); a long name beside another
/// site gets the hash bucket it needs; Debian's dynamic modules stay included.
#[test]
fn nginx_warnings_long_names_and_modules_beside_other_sites() {
    if !ready() {
        return;
    }
    let site = Site::new();
    for dir in ["sites-enabled", "conf.d", "modules-enabled"] {
        std::fs::create_dir_all(site.path(&format!("etc/nginx/{dir}"))).expect("mkdir");
    }
    let other = |name: &str| {
        format!("server {{\n    listen 127.0.0.1:{};\n    server_name {name};\n    return 418;\n}}\n", site.port)
    };
    std::fs::write(site.path("etc/nginx/sites-enabled/other"), other("gw.example.com")).expect("site");
    std::fs::write(site.path("etc/nginx/modules-enabled/50-vakt-test.conf"), "worker_rlimit_nofile 4096;\n")
        .expect("module");

    // The same name on the same port: nginx keeps the first and ignores the gateway's.
    let same = site.profile("server_name = \"gw.example.com\"");
    let check = run(vakt().args(["check", "--only", "nginx", "--format", "json", "-p", &same]));
    assert_eq!(check.code, 1, "{}", check.stdout);
    let report = json(&check);
    assert_eq!(status_of(&report, "nginx.warnings"), "drift", "{}", check.stdout);
    let said = evidence(&report, "nginx.warnings");
    assert!(said.contains("conflicting server name \"gw.example.com\""), "{said}");

    // A 70-character name beside the other site: nginx's default bucket is too small.
    let long = format!("{}.example.com", "a".repeat(58));
    let p = site.profile(&format!("server_name = \"{long}\""));
    let apply = site.apply(&p);
    assert_eq!(apply.code, 0, "{}", apply.stdout);
    let conf = std::fs::read_to_string(site.path("etc/nginx/nginx.conf")).expect("conf");
    assert!(conf.contains("server_names_hash_bucket_size 128;"), "{conf}");
    assert!(conf.contains("include modules-enabled/*.conf;"), "{conf}");
    let dump = run(std::process::Command::new("nginx").args(["-T", "-c", &site.config()]));
    assert_eq!(dump.code, 0, "{}", dump.stderr);
    assert!(dump.stdout.contains("worker_rlimit_nofile 4096;"), "the module config is read");
    // Without the size nginx refuses the same pair: the sizing is what makes it pass.
    std::fs::write(site.path("etc/nginx/nginx.conf"), conf.replace("    server_names_hash_bucket_size 128;\n", ""))
        .expect("w");
    let bare = run(std::process::Command::new("nginx").args(["-t", "-c", &site.config()]));
    assert_ne!(bare.code, 0, "nginx accepted the long name without the bucket size");
    assert!(bare.stderr.contains("server_names_hash_bucket_size"), "{}", bare.stderr);
}
