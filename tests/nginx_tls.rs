//! HTTPS for the gateway with real components only: Debian's pebble as the ACME
//! server (its own test CA), real certbot in webroot mode, real nginx, a gateway stand-in
//! behind it. Everything runs in a private network namespace where `gateway.test` resolves to
//! loopback through a hosts file bound in a private mount namespace; certbot's default config
//! directory and the runtime directory are bound to temporary ones there too, so the machine's
//! own are never touched.

mod common;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ready() -> bool {
    require("root", is_root())
        && require(
            "nginx, certbot, pebble, openssl, curl and python3",
            ["nginx", "certbot", "pebble", "openssl", "curl", "python3"].iter().all(|p| has(p)),
        )
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

struct Acme {
    netns: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Acme {
    /// A namespace with pebble on 127.0.0.1:14000 (HTTP-01 validated on port 80), the gateway
    /// stand-in on 127.0.0.1:8080 and nginx running a placeholder config on port 80.
    fn start() -> Acme {
        let netns = format!("vakt-tls-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().display().to_string();
        sh(&format!(
            "cd {t}
             mkdir -p etc/nginx letsencrypt-host run gateway acme
             cp /etc/nginx/mime.types etc/nginx/
             printf '127.0.0.1 localhost\\n127.0.0.1 gateway.test\\n127.0.0.1 api.gateway.test\\n127.0.0.1 more.gateway.test\\n' > hosts
             printf 'gateway stand-in\\n' > gateway/index.html
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
                 -days 2 -subj '/CN=vakt test ACME listener CA' 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout acme.key -out acme.csr \
                 -subj /CN=localhost 2>/dev/null
             printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > acme.ext
             openssl x509 -req -in acme.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out acme.pem -days 2 \
                 -extfile acme.ext 2>/dev/null
             cat > pebble.json <<EOF
{{\"pebble\": {{\"listenAddress\": \"127.0.0.1:14000\", \"managementListenAddress\": \"127.0.0.1:15000\",
 \"certificate\": \"{t}/acme.pem\", \"privateKey\": \"{t}/acme.key\", \"httpPort\": 80, \"tlsPort\": 5001,
 \"ocspResponderURL\": \"\", \"externalAccountBindingRequired\": false}}}}
EOF
             cat > etc/nginx/nginx.conf <<EOF
pid {t}/nginx.pid;
error_log {t}/error.log;
events {{}}
http {{ server {{ listen 80; return 404; }} }}
EOF
             ip netns add {netns}
             ip -n {netns} link set lo up"
        ));
        let mut acme = Acme { netns, dir, children: Vec::new() };
        let mut pebble = acme.command(&["pebble", "-config", &format!("{t}/pebble.json")]);
        pebble.env("PEBBLE_VA_NOSLEEP", "1");
        // pebble refuses 5 % of nonces by default to exercise clients' retries; Debian's
        // certbot 2.1 on Python 3.11 crashes on an ACME error instead (certbot/certbot#9539),
        // which made these tests fail one run in a few.
        pebble.env("PEBBLE_WFE_NONCEREJECT", "0");
        acme.spawn(pebble, "pebble.log");
        let gateway_dir = format!("{t}/gateway");
        let gateway =
            acme.command(&["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", &gateway_dir]);
        acme.spawn(gateway, "gateway.log");
        let nginx = acme.run(&["nginx", "-c", &format!("{t}/etc/nginx/nginx.conf")]);
        assert_eq!(nginx.code, 0, "nginx starts: {}", nginx.stderr);
        let started = Instant::now();
        while acme.run(&["curl", "-sf", "--cacert", &acme.file("ca.pem"), "https://127.0.0.1:14000/dir"]).code != 0
            || acme.run(&["curl", "-sf", "http://127.0.0.1:8080/"]).code != 0
        {
            assert!(started.elapsed() < Duration::from_secs(20), "pebble and the gateway stand-in start");
            std::thread::sleep(Duration::from_millis(100));
        }
        acme
    }

    fn file(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// `argv` in the namespace, with the private hosts file, certbot directory and runtime dir.
    fn command(&self, argv: &[&str]) -> Command {
        let t = self.dir.path().display();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "unshare", "-m", "--propagation", "private", "sh", "-ec"])
            .arg(format!(
                "mount --bind {t}/hosts /etc/hosts; mount --bind {t}/letsencrypt-host /etc/letsencrypt; \
                 mount --bind {t}/run /run; exec \"$@\""
            ))
            .arg("sandbox")
            .args(argv)
            .env("REQUESTS_CA_BUNDLE", self.file("ca.pem"))
            .env("NO_COLOR", "1");
        c
    }

    fn run(&self, argv: &[&str]) -> Run {
        run(&mut self.command(argv))
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) {
        let log = std::fs::File::create(self.file(log)).expect("log");
        let err = log.try_clone().expect("log");
        self.children.push(cmd.stdout(log).stderr(err).spawn().expect("spawns"));
    }

    fn vakt(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    fn profile(&self, directory: &str, certbot: &str) -> String {
        self.profile_for(directory, certbot, &["gateway.test"])
    }

    fn profile_for(&self, directory: &str, certbot: &str, domains: &[&str]) -> String {
        let t = self.dir.path().display();
        let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        let domains = domains.join(", ");
        let body = format!(
            "[nginx]\nconfig = \"{t}/etc/nginx/nginx.conf\"\npid = \"{t}/nginx.pid\"\nerror_log = \"{t}/error.log\"\n\
             access_log = \"{t}/access.log\"\nlisten = \"80\"\nupstream = [\"127.0.0.1:8080\"]\n\n\
             [nginx.tls]\ndomains = [{domains}]\nemail = \"ops@gateway.test\"\nacme_directory = \"{directory}\"\n\
             hsts = true\nwebroot = \"{t}/acme\"\ncertbot_config_dir = \"{t}/{certbot}\"\n\
             certbot_work_dir = \"{t}/{certbot}-work\"\ncertbot_logs_dir = \"{t}/{certbot}-logs\"\n"
        );
        let p = self.file("profile.toml");
        std::fs::write(&p, body).expect("profile");
        p
    }

    /// pebble's root for the chain it issues (it makes a new one at each start).
    fn issuing_root(&self) -> String {
        let out = self.run(&["curl", "-sf", "--cacert", &self.file("ca.pem"), "https://127.0.0.1:15000/roots/0"]);
        assert_eq!(out.code, 0, "pebble's management endpoint answers: {}", out.stderr);
        let path = self.file("pebble-root.pem");
        std::fs::write(&path, out.stdout).expect("root");
        path
    }

    /// The serial of the certificate nginx serves for gateway.test, and of a PEM file.
    fn served_serial(&self) -> String {
        let t = self.dir.path().display();
        let script = format!(
            "openssl s_client -connect 127.0.0.1:443 -servername gateway.test </dev/null 2>/dev/null \
             | openssl x509 -noout -serial > {t}/served.serial"
        );
        assert_eq!(self.run(&["sh", "-c", &script]).code, 0);
        std::fs::read_to_string(self.file("served.serial")).expect("serial").trim().to_string()
    }

    fn serial_of(&self, pem: &str) -> String {
        run(Command::new("openssl").args(["x509", "-noout", "-serial", "-in", pem])).stdout.trim().to_string()
    }

    fn curl(&self, args: &[&str]) -> String {
        let mut argv = vec!["curl", "-s", "--max-time", "20"];
        argv.extend_from_slice(args);
        self.run(&argv).stdout
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            && !pid.trim().is_empty()
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

#[test]
fn a_fresh_apply_obtains_serves_redirects_renews_and_reports_expiry() {
    if !ready() {
        return;
    }
    let acme = Acme::start();
    let profile = acme.profile("https://127.0.0.1:14000/dir", "letsencrypt");

    let check = acme.vakt(&["check", "--only", "nginx", "--format", "json", "-p", &profile]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert_eq!(status_of(&json(&check), "nginx.tls.certificate"), "drift");

    let started = Instant::now();
    let apply = acme.vakt(&["apply", "--only", "nginx", "--format", "json", "-p", &profile]);
    let took = started.elapsed();
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    let report = json(&apply);
    for id in ["nginx.config", "nginx.tls.certificate", "nginx.tls.hook"] {
        assert_eq!(status_of(&report, id), "changed", "{id}: {}", apply.stdout);
    }
    assert!(report["commands"].to_string().contains("certbot certonly"), "{}", report["commands"]);
    let cert = acme.file("letsencrypt/live/gateway.test/cert.pem");
    let conf = std::fs::read_to_string(acme.file("etc/nginx/nginx.conf")).expect("conf");
    assert!(conf.contains("listen 443 ssl default_server;") && conf.contains("max-age=31536000"), "{conf}");
    eprintln!("fresh apply with a real HTTP-01 validation took {took:?}");

    // HTTPS reaches the gateway, verified against pebble's root, with the certificate on disk.
    let root = acme.issuing_root();
    let body = acme.curl(&["--cacert", &root, "https://gateway.test/"]);
    assert_eq!(body, "gateway stand-in\n");
    let first = acme.serial_of(&cert);
    assert_eq!(acme.served_serial(), first, "nginx serves the certificate on disk");

    // Plain HTTP redirects, except the challenge path.
    let redirect = acme.curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://gateway.test/x?y=1"]);
    assert_eq!(redirect, "301 https://gateway.test/x?y=1");
    write_file(acme.dir.path(), "acme/.well-known/acme-challenge/probe", "token\n");
    assert_eq!(acme.curl(&["http://gateway.test/.well-known/acme-challenge/probe"]), "token\n");

    let again = acme.vakt(&["apply", "--only", "nginx", "--format", "json", "-p", &profile]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(ids_with(&json(&again), "changed").is_empty(), "{}", again.stdout);
    let ran = json(&again)["commands"].to_string();
    assert!(!ran.contains("certbot") && !ran.contains("kill") && !ran.contains("reload"), "{ran}");

    let check = acme.vakt(&["check", "--only", "nginx", "-p", &profile]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(check.stdout.contains("names gateway.test") && check.stdout.contains("expires in"), "{}", check.stdout);
    let prom = acme.vakt(&["check", "--only", "nginx", "--format", "prometheus", "-p", &profile]);
    let gauge = prom.stdout.lines().find(|l| l.starts_with("vakt_certificate_expiry_seconds{"));
    let seconds: f64 = gauge.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0);
    assert!(seconds > 86_400.0, "{}", prom.stdout);

    // A forced renewal through certbot's own command and the deploy hook vakt installed,
    // under a loop of HTTPS requests that must all succeed.
    let t = acme.dir.path().display().to_string();
    let lp = format!(
        "while [ ! -e {t}/stop ]; do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 --cacert {root} \
         https://gateway.test/ >> {t}/loop.log; done"
    );
    let mut looping = acme.command(&["sh", "-c", &lp]).spawn().expect("loop");
    std::thread::sleep(Duration::from_millis(500));
    let renew = acme.run(&[
        "certbot",
        "renew",
        "--force-renewal",
        "--non-interactive",
        // Without a TTY certbot sleeps up to 8 minutes first, to spread the timer's load.
        "--no-random-sleep-on-renew",
        "--config-dir",
        &format!("{t}/letsencrypt"),
        "--work-dir",
        &format!("{t}/letsencrypt-work"),
        "--logs-dir",
        &format!("{t}/letsencrypt-logs"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(acme.file("stop"), "").expect("stop");
    let _ = looping.wait();
    assert_eq!(renew.code, 0, "{}{}", renew.stdout, renew.stderr);
    assert!(
        renew.stderr.contains("vakt-nginx") || renew.stdout.contains("vakt-nginx"),
        "the hook ran: {}",
        renew.stderr
    );
    let second = acme.serial_of(&cert);
    assert_ne!(second, first, "certbot renewed");
    assert_eq!(acme.served_serial(), second, "the deploy hook made nginx serve the renewed certificate");
    let codes = std::fs::read_to_string(acme.file("loop.log")).expect("loop log");
    assert!(codes.lines().count() >= 5, "the loop ran across the renewal: {codes}");
    assert!(codes.lines().all(|c| c == "200"), "no failed request across the renewal: {codes}");
    let check = acme.vakt(&["check", "--only", "nginx", "-p", &profile]);
    assert_eq!(check.code, 0, "{}", check.stdout);
}

#[test]
fn an_acme_server_that_is_down_leaves_the_http_gateway_serving() {
    if !ready() {
        return;
    }
    let acme = Acme::start();
    // Nothing listens on 14001 in the namespace.
    let profile = acme.profile("https://127.0.0.1:14001/dir", "letsencrypt");
    let apply = acme.vakt(&["apply", "--only", "nginx", "-p", &profile]);
    assert_eq!(apply.code, 1, "{}", apply.stdout);
    assert!(
        apply
            .stdout
            .contains("certbot could not obtain a certificate for gateway.test from https://127.0.0.1:14001/dir")
            && apply.stdout.contains("keeps serving plain HTTP"),
        "{}",
        apply.stdout
    );
    let json_apply = acme.vakt(&["check", "--only", "nginx", "--format", "json", "-p", &profile]);
    assert_eq!(status_of(&json(&json_apply), "nginx.tls.certificate"), "drift");
    assert_eq!(status_of(&json(&json_apply), "nginx.config"), "ok", "the HTTP phase is live");
    assert_eq!(acme.curl(&["http://gateway.test/"]), "gateway stand-in\n", "the HTTP gateway serves");
    let conf = std::fs::read_to_string(acme.file("etc/nginx/nginx.conf")).expect("conf");
    assert!(!conf.contains("ssl") && conf.contains("acme-challenge"), "{conf}");
    let t = run(Command::new("nginx").args(["-t", "-c", &acme.file("etc/nginx/nginx.conf")]));
    assert_eq!(t.code, 0, "{}", t.stderr);
}

/// Issue 23: a name added on a host that has a certificate. vakt's certbot run used to start
/// vakt's own deploy hook, which waited 300 s for the apply lock of the vakt that ran certbot,
/// with HTTPS switched off the whole time. Now HTTPS keeps serving the current certificate
/// while certbot works, the hook inside vakt's run does nothing, and the apply takes seconds;
/// when the ACME server is down, the old certificate keeps serving and the names not yet
/// covered are named. A loop of HTTPS requests for the name already covered loses none.
#[test]
fn a_name_added_keeps_https_serving_and_never_waits_on_vakts_own_hook() {
    if !ready() {
        return;
    }
    let acme = Acme::start();
    let up = "https://127.0.0.1:14000/dir";
    let profile = acme.profile(up, "letsencrypt");
    let first = acme.vakt(&["apply", "--only", "nginx", "-p", &profile]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let root = acme.issuing_root();
    let t = acme.dir.path().display().to_string();
    let lp = format!(
        "while [ ! -e {t}/stop ]; do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 --cacert {root} \
         https://gateway.test/ >> {t}/loop.log; sleep 0.05; done"
    );
    let mut looping = Looping(acme.command(&["sh", "-c", &lp]).spawn().expect("loop"));
    std::thread::sleep(Duration::from_millis(500));

    // A second name, with the ACME server up.
    let two = acme.profile_for(up, "letsencrypt", &["gateway.test", "api.gateway.test"]);
    let started = Instant::now();
    let add = acme.vakt(&["apply", "--only", "nginx", "--format", "json", "-p", &two]);
    let took = started.elapsed();
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    assert!(took < Duration::from_secs(60), "the apply waited on its own hook: {took:?}");
    eprintln!("a name added with ACME up took {took:?}");
    let cert = acme.file("letsencrypt/live/gateway.test/cert.pem");
    let names = run(Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName", "-in", &cert])).stdout;
    assert!(names.contains("DNS:api.gateway.test"), "{names}");
    assert_eq!(
        acme.curl(&["--cacert", &root, "https://api.gateway.test/"]),
        "gateway stand-in\n",
        "the new name is served"
    );
    assert_eq!(acme.served_serial(), acme.serial_of(&cert));

    // A third name with the ACME server down: the apply fails, names what is not covered, and
    // HTTPS keeps serving the certificate it has.
    let down = acme.profile_for(
        "https://127.0.0.1:14001/dir",
        "letsencrypt",
        &["gateway.test", "api.gateway.test", "more.gateway.test"],
    );
    let failed = acme.vakt(&["apply", "--only", "nginx", "-p", &down]);
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    assert!(
        failed.stdout.contains("keeps serving HTTPS with the current certificate")
            && failed.stdout.contains("not yet covered: more.gateway.test"),
        "{}",
        failed.stdout
    );
    assert_eq!(acme.curl(&["--cacert", &root, "https://gateway.test/"]), "gateway stand-in\n");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(acme.file("stop"), "").expect("stop");
    let _ = looping.0.wait();
    let codes = std::fs::read_to_string(acme.file("loop.log")).expect("loop log");
    assert!(codes.lines().count() >= 10, "the loop ran across both: {codes}");
    assert!(codes.lines().all(|c| c == "200"), "a request for a covered name failed: {codes}");
}

/// A request loop that ends with the test, whatever happens in it.
struct Looping(Child);

impl Drop for Looping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
