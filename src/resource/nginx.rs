//! The `nginx` resource: the whole nginx.conf rendered from the profile, validated by the real
//! `nginx -t` before it goes live, swapped atomically, reloaded, and rolled back on failure.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod tls;
mod verdicts;

use super::{Finding, Gauge, Plan, Resource, Status};
use crate::fsutil;
use crate::host::{Host, Touches};
use crate::profile::{HttpVersion, Nginx as Wanted};

const NGINX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Observed {
    path: PathBuf,
    current: Option<String>,
    rendered: String,
    /// `nginx -t` on the rendered file, staged beside copies of the live config directory.
    /// nginx -t on the rendered config: its warnings, or why it failed.
    validation: Result<Vec<String>, Invalid>,
    master: Option<u32>,
    reload_pending: bool,
    /// Preparing an image offline (`--root`): no nginx of its runs here to reload.
    offline: bool,
    /// `sites-enabled/default` when it is the link to Debian's placeholder site and the
    /// profile disables it.
    default_site: Option<PathBuf>,
    /// `[nginx.tls]`: the certificate, the deploy hook, what nginx serves.
    tls: Option<tls::State>,
    /// Whether `rendered` holds the TLS server (a usable certificate is on disk).
    https: bool,
}

#[derive(Debug)]
pub enum Action {
    Write(String),
    /// Remove the link to Debian's placeholder site (its file stays in sites-available).
    DisableDefaultSite(PathBuf),
    /// The file is right but nginx may not run it: an earlier reload was interrupted, or
    /// certbot renewed the certificate.
    Reload,
    /// Install certbot's deploy hook.
    WriteHook(PathBuf, String),
    /// Ask certbot for a certificate (after the HTTP config with the challenge location is
    /// live), then put the TLS server in place.
    Obtain,
}

/// Why the rendered config was not accepted.
#[derive(Debug, Clone)]
pub enum Invalid {
    /// `nginx -t` ran and refused it, with nginx's own message.
    Rejected(String),
    /// `nginx -t` could not run (nginx missing, no staging directory).
    NotRun(String),
}

pub struct Nginx<'p> {
    want: &'p Wanted,
    /// Ports the firewall profile opens to the world, to spot a bypassed proxy.
    open_ports: Vec<u16>,
    /// Where the profile came from, for certbot's deploy hook to run vakt on.
    profile: crate::profile::Origin,
    /// nginx -t's verdicts of this run.
    verdicts: verdicts::Verdicts,
}

impl<'p> Nginx<'p> {
    pub fn new(want: &'p Wanted, open_ports: Vec<u16>) -> Self {
        Nginx { want, open_ports, profile: crate::profile::Origin::System, verdicts: Default::default() }
    }

    pub fn with_profile(mut self, origin: &crate::profile::Origin) -> Self {
        self.profile = origin.clone();
        self
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The whole nginx.conf. Defaults are the article's values. Every value comes from a validated
/// profile type (one nginx word each), and nothing else is embedded: not the profile's path,
/// which is the invoker's text and would make the same profile render differently by name.
/// With `[nginx.tls]`, `https` says whether the certificate is there: without it the plain
/// HTTP server proxies and answers ACME challenges (the first phase of a fresh host), with it
/// the TLS server is added and plain HTTP redirects when asked.
/// The `server_names_hash_bucket_size` the profile's names need, when nginx's default (64)
/// is too small: each name takes its length plus 2, rounded up to 8, plus a pointer (8), and a
/// bucket ends with a pointer (8); nginx rounds the bucket up to a power of two here.
fn hash_bucket_size(n: &Wanted) -> Option<usize> {
    let longest = n.tls.iter().flat_map(|t| t.domains.iter()).chain([&n.server_name]).map(String::len).max()?;
    let need = (longest + 2).div_ceil(8) * 8 + 8 + 8;
    (need > 64).then(|| need.next_power_of_two())
}

pub fn render(n: &Wanted, https: bool) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Managed by vakt from its profile; edit the profile, not this file:");
    let _ = writeln!(c, "# `vakt apply` replaces it (the previous one is kept as nginx.conf.vakt-prev).");
    let _ = writeln!(c, "user {};\nworker_processes {};\npid {};", n.user, n.worker_processes, n.pid.display());
    let _ = writeln!(c, "error_log {};", n.error_log);
    if n.include_sites {
        // Debian's dynamic modules: other sites (and the operator's) may use them.
        let _ = writeln!(c, "include modules-enabled/*.conf;");
    }
    let _ = writeln!(c, "\nevents {{\n    worker_connections 768;\n}}\n");
    let _ = writeln!(c, "http {{\n    include {};\n    default_type application/octet-stream;", n.mime_types);
    let _ = writeln!(c, "    access_log {};\n    server_tokens off;", n.access_log);
    if let Some(size) = hash_bucket_size(n) {
        // nginx's default bucket (one cache line, 64 bytes) holds names up to about 46
        // characters; beside another site on the same port, a longer one fails `nginx -t`.
        let _ = writeln!(c, "    server_names_hash_bucket_size {size};");
    }
    let _ = writeln!(c);
    let _ = writeln!(c, "    keepalive_timeout {};", n.keepalive_timeout);
    let _ = writeln!(c, "    keepalive_requests {};", n.keepalive_requests);
    let _ = writeln!(
        c,
        "    sendfile {};\n    tcp_nopush {};\n    tcp_nodelay {};\n",
        on_off(n.sendfile),
        on_off(n.tcp_nopush),
        on_off(n.tcp_nodelay)
    );
    let _ = writeln!(c, "    # Buffer size handling for large payloads");
    let _ = writeln!(c, "    client_body_buffer_size {};", n.client_body_buffer_size);
    let _ = writeln!(c, "    client_max_body_size {};\n", n.client_max_body_size);
    let _ = writeln!(c, "    upstream faas_gateway {{");
    for server in &n.upstream {
        let _ = writeln!(c, "        server {server};");
    }
    if n.upstream_keepalive > 0 {
        let _ = writeln!(c, "        keepalive {};", n.upstream_keepalive);
    }
    if n.include_sites {
        let _ = writeln!(c, "    }}\n\n    # Other sites (the operator's, certbot's) keep working beside the gateway.");
        let _ = writeln!(c, "    include conf.d/*.conf;\n    include sites-enabled/*;");
    } else {
        let _ = writeln!(c, "    }}");
    }
    let _ = writeln!(
        c,
        "\n    server {{\n        listen {} default_server;\n        server_name {};\n",
        n.listen, n.server_name
    );
    let https = n.tls.as_ref().filter(|_| https);
    if let Some(t) = &n.tls {
        tls::render_challenge(&mut c, t);
    }
    match https {
        Some(t) if t.redirect_http => {
            let _ = writeln!(
                c,
                "        location / {{\n            return 301 https://$host$request_uri;\n        }}\n    }}"
            );
        }
        _ => proxy_location(&mut c, n),
    }
    if let Some(t) = https {
        tls::render_server_head(&mut c, t);
        proxy_location(&mut c, n);
    }
    let _ = writeln!(c, "}}");
    c
}

/// The gateway's `location /` and the end of its server block.
fn proxy_location(c: &mut String, n: &Wanted) {
    let _ = writeln!(c, "        location / {{\n            proxy_pass http://faas_gateway;");
    let _ = writeln!(c, "            proxy_http_version {};", n.proxy_http_version);
    if n.proxy_clear_connection {
        let _ = writeln!(c, "            proxy_set_header Connection \"\";");
    }
    let _ = writeln!(c, "            proxy_set_header X-Real-IP $remote_addr;");
    let _ = writeln!(c, "            # Critical for FaaS: long synchronous invocations");
    let _ = writeln!(c, "            proxy_read_timeout {};", n.proxy_read_timeout);
    let _ = writeln!(c, "            proxy_send_timeout {};", n.proxy_send_timeout);
    let _ = writeln!(c, "        }}\n    }}");
}

/// Plan-time warnings about settings that defeat themselves.
pub fn lint(n: &Wanted, open_ports: &[u16]) -> Vec<String> {
    let mut w = Vec::new();
    if n.upstream_keepalive > 0 && (n.proxy_http_version != HttpVersion::V1_1 || !n.proxy_clear_connection) {
        w.push("upstream keepalive is inert: it needs proxy_http_version 1.1 and an empty Connection header (proxy_clear_connection = true)".into());
    }
    if n.proxy_read_timeout < n.longest_invocation {
        w.push(format!(
            "proxy_read_timeout {} is shorter than longest_invocation {}: long invocations end in 504 Gateway Time-out",
            n.proxy_read_timeout, n.longest_invocation
        ));
    }
    if n.client_max_body_size < n.client_body_buffer_size {
        w.push(format!(
            "client_max_body_size {} is smaller than client_body_buffer_size {}: the buffer can never fill",
            n.client_max_body_size, n.client_body_buffer_size
        ));
    }
    for u in &n.upstream {
        if open_ports.contains(&u.port) {
            let port = u.port;
            w.push(format!(
                "the gateway port {port} is open to the world in the firewall profile: clients can bypass nginx (a host rule does not govern a port Docker publishes; `vakt check --only exposure` shows what is really reachable)"
            ));
        }
    }
    w
}

/// Runs `nginx -t` on the config rendered from `want`, staged in a fresh directory beside
/// symlinks to everything else in the live config directory, so relative includes resolve
/// exactly as they would live, and the live directory is not touched. The staged copy points
/// its pid file and logs into the staging directory: `nginx -t` opens them for writing, which
/// an audit running unprivileged or under `ProtectSystem=strict` may not do to the live ones.
fn validate(
    host: &Host,
    live: &Path,
    want: &Wanted,
    https: bool,
    without: Option<&Path>,
    verdicts: &verdicts::Verdicts,
) -> verdicts::Verdict {
    let dir = live.parent().ok_or_else(|| Invalid::NotRun("the nginx config has no directory".into()))?;
    // Keyed on the config as staged, whose pid file and logs are the stage's own, not the live
    // ones (the access log changes with every request, and nginx -t does not read it).
    let inputs = verdicts::inputs(dir, live, without, &render(&staged(want, Path::new("/vakt-stage")), https));
    verdicts.get(inputs, || nginx_t(host, dir, live, want, https, without))
}

/// `want` with its pid file and logs in `stage`: `nginx -t` opens them for writing, which an
/// audit running unprivileged or under `ProtectSystem=strict` may not do to the live ones.
fn staged(want: &Wanted, stage: &Path) -> Wanted {
    let own = |name: &str| stage.join(format!("vakt-test.{name}"));
    let mut staged = want.clone();
    staged.pid = own("pid");
    staged.error_log = own("error.log").display().to_string();
    staged.access_log = own("access.log").display().to_string();
    staged
}

/// `nginx -t` of the staged config (see [`validate`]).
fn nginx_t(
    host: &Host,
    dir: &Path,
    live: &Path,
    want: &Wanted,
    https: bool,
    without: Option<&Path>,
) -> verdicts::Verdict {
    let stage = tempfile::Builder::new()
        .prefix("vakt-nginx-")
        .tempdir()
        .map_err(|e| Invalid::NotRun(format!("failed to create a staging directory: {e}")))?;
    stage_links(dir, stage.path(), live, without);
    let own = |name: &str| stage.path().join(format!("vakt-test.{name}"));
    let staged_want = staged(want, stage.path());
    let staged = stage.path().join("nginx.conf");
    std::fs::write(&staged, render(&staged_want, https))
        .map_err(|e| Invalid::NotRun(format!("failed to stage {}: {e}", staged.display())))?;
    let (staged, early_log) = (staged.display().to_string(), own("early.log").display().to_string());
    // Without -q: nginx's warnings (a server name another site already serves, "ignored")
    // are findings, not noise.
    match host.runner.run(&["nginx", "-t", "-e", &early_log, "-c", &staged], &[], NGINX_TIMEOUT) {
        Ok(out) if out.success => Ok(warnings(&out.stderr, &staged, &live.display().to_string())),
        Ok(out) => {
            let message = crate::escape::controls(out.stderr.trim()).replace(&staged, &live.display().to_string());
            if could_not_run(&message) {
                Err(Invalid::NotRun(format!("nginx -t could not open what it needs, so nothing is judged: {message}")))
            } else {
                Err(Invalid::Rejected(message))
            }
        }
        Err(e) => Err(Invalid::NotRun(format!("{e:#}"))),
    }
}

/// nginx -t's `[warn]` lines, escaped, naming the live config instead of the staged copy.
/// The `user` directive's warning only says nginx -t did not run as root.
fn warnings(stderr: &str, staged: &str, live: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("[warn]") && !l.contains("\"user\" directive"))
        .map(|l| crate::escape::controls(l.trim()).replace(staged, live))
        .collect()
}

/// Links everything in the live config directory into the stage, except the live config
/// itself and `without` (a site link apply will remove): a directory holding it is staged as
/// a directory of links to the rest.
fn stage_links(live_dir: &Path, stage: &Path, live: &Path, without: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(live_dir) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if e.file_name() == live.file_name().unwrap_or_default() || Some(path.as_path()) == without {
            continue;
        }
        let target = stage.join(e.file_name());
        if without.is_some_and(|w| w.parent() == Some(path.as_path())) && std::fs::create_dir(&target).is_ok() {
            stage_links(&path, &target, live, without);
        } else {
            let _ = std::os::unix::fs::symlink(&path, &target);
        }
    }
}

/// `sites-enabled/default` beside the live config when it links to Debian's placeholder site.
fn placeholder_site(live: &Path) -> Option<PathBuf> {
    let link = live.parent()?.join("sites-enabled/default");
    let target = std::fs::read_link(&link).ok()?;
    target.ends_with("sites-available/default").then_some(link)
}

/// Whether `nginx -t` failed for want of permission (an unprivileged or sandboxed audit), not
/// because of the config: EACCES, EROFS or EPERM on a file it opens.
fn could_not_run(stderr: &str) -> bool {
    ["(13: Permission denied)", "(30: Read-only file system)", "(1: Operation not permitted)"]
        .iter()
        .any(|e| stderr.contains(e))
}

/// The pending-reload marker of one config file (one nginx instance).
fn reload_marker(host: &Host, config: &Path) -> fsutil::Pending {
    fsutil::Pending::new(host.root(), &format!("nginx-reload{}", config.display().to_string().replace('/', "_")))
}

/// The nginx master, from the pid file, if it runs.
fn master_pid(host: &Host, pid_file: &Path) -> Option<u32> {
    let pid: u32 = host.read_opt(pid_file)?.parse().ok()?;
    host.path(format!("/proc/{pid}")).exists().then_some(pid)
}

fn workers(host: &Host, master: u32) -> BTreeSet<u32> {
    let Ok(procs) = std::fs::read_dir(host.path("/proc")) else { return BTreeSet::new() };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            host.read_opt(format!("/proc/{pid}/stat"))
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(master)
        })
        .collect()
}

impl Nginx<'_> {
    /// The main process systemd knows for nginx.service, if it runs one.
    fn systemd_main_pid(&self, host: &Host) -> Option<u32> {
        let out =
            host.runner.run(&["systemctl", "show", "-p", "MainPID", "--value", "nginx"], &[], NGINX_TIMEOUT).ok()?;
        out.stdout.trim().parse().ok().filter(|pid| *pid != 0)
    }

    fn reload(&self, host: &Host, master: u32) -> anyhow::Result<()> {
        crate::failpoint::hit("nginx-reload");
        let before = workers(host, master);
        // systemd reloads the nginx it runs; any other master (another instance, one started
        // by hand) gets the signal `nginx -s reload` would send it.
        if host.has_systemd() && self.systemd_main_pid(host) == Some(master) {
            host.runner.run_ok(&["systemctl", "reload", "nginx"], NGINX_TIMEOUT)?;
        } else {
            host.runner.run_ok(&["kill", "-HUP", &master.to_string()], NGINX_TIMEOUT)?;
        }
        // The reload took when the master has started a new generation of workers; idle old
        // workers then quit at once, busy ones finish their requests (not waited for long).
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let now = workers(host, master);
            if now.iter().any(|w| !before.contains(w)) {
                let grace = Instant::now();
                while grace.elapsed() < Duration::from_secs(3)
                    && workers(host, master).iter().any(|w| before.contains(w))
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nginx (master {master}) started no new workers within 10s of the reload; see its error log")
    }
}

impl Resource for Nginx<'_> {
    type Observed = Observed;
    type Action = Action;

    fn id(&self) -> &'static str {
        "nginx"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let path = host.path(&self.want.config);
        let current = match crate::fsutil::read_text(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("failed to read {}: {e}", path.display()),
        };
        let mut tls = self.want.tls.as_ref().map(|t| tls::observe(host, t, &self.profile));
        // HTTPS whenever a certificate nginx can serve is on disk, even one that lacks a name
        // the profile added: the new one is obtained while it serves.
        let https = match (&self.want.tls, &tls) {
            (Some(_), Some(state)) => state.servable().is_some(),
            _ => false,
        };
        let rendered = render(self.want, https);
        let default_site =
            placeholder_site(&path).filter(|_| self.want.include_sites && self.want.disable_default_site);
        let validation = validate(host, &path, self.want, https, default_site.as_deref(), &self.verdicts);
        let reload_pending = reload_marker(host, &path).is_set();
        let master = if host.is_live() { master_pid(host, &self.want.pid) } else { None };
        let offline = !host.is_live();
        // Whether nginx serves the certificate on disk is asked only of an nginx that runs the
        // TLS config on disk: anything else is a config drift first.
        if let (Some(t), Some(state), Some(_)) = (&self.want.tls, &mut tls, master)
            && https
            && current.as_deref() == Some(rendered.as_str())
            && let Some(cert) = state.usable(t).cloned()
        {
            state.served = tls::probe_served(host, t, &cert);
        }
        let path = host.file_path(&self.want.config);
        Ok(Observed { path, current, rendered, validation, master, reload_pending, offline, default_site, tls, https })
    }

    fn plan(&self, o: &Observed) -> Plan<Action> {
        let mut plan = Plan::default();
        for w in lint(self.want, &self.open_ports) {
            plan.warn(w);
        }
        let shown = o.path.display();
        if let Ok(warned) = &o.validation
            && !warned.is_empty()
        {
            let mut f = Finding::new(
                "nginx.warnings",
                "nginx -t warns about the config rendered from the profile (a name another site serves is ignored)",
                Status::Drift,
            );
            f.evidence.clone_from(warned);
            plan.pass(f);
        }
        let id = "nginx.config";
        let title = format!("{shown} is the gateway proxy rendered from the profile");
        if let Err(Invalid::Rejected(e)) = &o.validation {
            let mut f = Finding::new(
                id,
                format!("nginx -t rejects the config rendered from the profile; {shown} is left as it is"),
                Status::Failed,
            );
            f.evidence.push(e.clone());
            plan.pass(f);
        } else if let Err(Invalid::NotRun(e)) = &o.validation
            && o.offline
        {
            let f = Finding::deferred(id, format!("{shown} cannot be validated here"), "validate and write it");
            plan.pass(f.with_evidence(e.clone()));
        } else if let Err(Invalid::NotRun(e)) = &o.validation {
            // Nothing is written without a successful validation.
            let title = format!("{shown} cannot be validated, so it is not managed now");
            plan.pass(Finding::unknown(id, title, e.clone()));
        } else if o.current.as_deref() == Some(o.rendered.as_str()) {
            if let Some(link) = &o.default_site {
                plan.fix(default_site_finding(link), Action::DisableDefaultSite(link.clone()));
            }
            plan.pass(Finding::ok(id, title).with_evidence("nginx -t passes"));
            if o.reload_pending && o.master.is_some() {
                let f = Finding::drift("nginx.reload", "nginx runs the config on disk", "reload nginx")
                    .with_evidence("an earlier reload was interrupted");
                plan.fix(f, Action::Reload);
            }
        } else {
            let change =
                if o.master.is_some() { format!("write {shown} and reload nginx") } else { format!("write {shown}") };
            let old = o.current.clone().unwrap_or_default();
            let mut f = Finding::drift(id, title, change).with_evidence(match &o.current {
                None => "the file does not exist".to_string(),
                Some(_) => "the file differs from the rendered config".to_string(),
            });
            f.diff = Some(
                similar::TextDiff::from_lines(&old, &o.rendered)
                    .unified_diff()
                    .header(&format!("{shown}"), &format!("{shown} (vakt)"))
                    .to_string(),
            );
            if let Some(link) = &o.default_site {
                plan.fix(default_site_finding(link), Action::DisableDefaultSite(link.clone()));
            }
            plan.fix(f, Action::Write(o.rendered.clone()));
        }
        if let (Some(t), Some(state)) = (&self.want.tls, &o.tls) {
            self.plan_tls(&mut plan, o, t, state);
        }
        if o.master.is_none() && !o.offline {
            plan.warn(format!(
                "nginx is not running (no live process in {}); a new config takes effect when it starts",
                self.want.pid.display()
            ));
        }
        plan
    }

    /// nginx's own files and its master: neither the engine nor the netfilter tables. certbot
    /// runs the operator's hooks, which may change anything.
    fn touches(&self, actions: &[Action]) -> Touches {
        if actions.iter().any(|a| matches!(a, Action::Obtain)) { Touches::Everything } else { Touches::Nothing }
    }

    fn apply(&self, host: &Host, o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        let pending = reload_marker(host, &o.path);
        let mut wrote = false;
        let mut reload = false;
        let mut obtain = false;
        let mut unlinked: Option<(PathBuf, PathBuf)> = None;
        for action in actions {
            match action {
                Action::Reload => reload = true,
                Action::WriteHook(path, script) => tls::write_hook(&path, &script)?,
                Action::Obtain => obtain = true,
                Action::DisableDefaultSite(link) => {
                    let target =
                        std::fs::read_link(&link).with_context(|| format!("failed to read {}", link.display()))?;
                    if o.master.is_some() {
                        pending.set()?;
                    }
                    std::fs::remove_file(&link).with_context(|| format!("failed to remove {}", link.display()))?;
                    unlinked = Some((link, target));
                    reload = true;
                }
                Action::Write(content) => {
                    if let Some(dir) = o.path.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
                    }
                    if o.master.is_some() {
                        pending.set()?;
                    }
                    fsutil::write_atomic(&o.path, content.as_bytes(), true)?;
                    wrote = true;
                    reload = true;
                }
            }
        }
        if let Some(master) = o.master.filter(|_| reload) {
            if let Err(e) = self.reload(host, master) {
                let undo = self.undo(o, wrote, unlinked.as_ref()).and_then(|()| self.reload(host, master));
                let undo = undo.and_then(|()| pending.clear());
                match undo {
                    Ok(()) => bail!("{e:#}; the previous {} was restored and nginx reloaded", o.path.display()),
                    Err(u) => bail!("{e:#}; restoring the previous {} failed too: {u:#}", o.path.display()),
                }
            }
            pending.clear()?;
        }
        match (&self.want.tls, obtain) {
            (Some(t), true) => self.obtain_and_enable(host, o, t),
            _ => Ok(()),
        }
    }
}

impl Nginx<'_> {
    /// The second phase: certbot answers the challenge through the HTTP config now live, then
    /// the TLS config is validated with the new certificate, swapped in and reloaded, and the
    /// HTTP config put back if the reload fails. A certbot failure leaves the HTTP gateway.
    fn obtain_and_enable(&self, host: &Host, o: &Observed, t: &crate::profile::NginxTls) -> anyhow::Result<()> {
        let keeps = match o.tls.as_ref().and_then(|s| s.servable()) {
            Some(cert) if o.https => {
                let missing: Vec<&str> =
                    t.domains.iter().filter(|d| !cert.names.contains(d)).map(String::as_str).collect();
                format!(
                    "the gateway keeps serving HTTPS with the current certificate ({}; not yet covered: {})",
                    cert.names.join(", "),
                    if missing.is_empty() { "none".to_string() } else { missing.join(", ") }
                )
            }
            _ => "the gateway keeps serving plain HTTP".to_string(),
        };
        let hooks = tls::obtain(host, t).context(keeps)?;
        self.enable_https(host, o, t)?;
        if !hooks.is_empty() {
            bail!(
                "certbot obtained the certificate and nginx serves it, but a deploy hook failed: {}",
                hooks.join("; ")
            );
        }
        Ok(())
    }

    /// After certbot: the TLS config, validated with the new certificate, swapped in and reloaded.
    fn enable_https(&self, host: &Host, o: &Observed, _t: &crate::profile::NginxTls) -> anyhow::Result<()> {
        let https = render(self.want, true);
        if o.https && o.rendered == https {
            // Renewed inside the warning window: same config, new certificate.
            return match o.master {
                Some(master) => self.reload(host, master),
                None => Ok(()),
            };
        }
        match validate(host, &o.path, self.want, true, None, &self.verdicts) {
            Ok(_) => {}
            Err(Invalid::Rejected(e) | Invalid::NotRun(e)) => {
                bail!("nginx -t rejects the TLS config with the new certificate, so the gateway keeps plain HTTP: {e}")
            }
        }
        let http = crate::fsutil::read_text(&o.path).ok();
        let pending = reload_marker(host, &o.path);
        if o.master.is_some() {
            pending.set()?;
        }
        fsutil::write_atomic(&o.path, https.as_bytes(), true)?;
        let Some(master) = o.master else { return pending.clear() };
        if let Err(e) = self.reload(host, master) {
            let undo = match &http {
                Some(old) => fsutil::write_atomic(&o.path, old.as_bytes(), false),
                None => std::fs::remove_file(&o.path).with_context(|| format!("failed to remove {}", o.path.display())),
            };
            let undo = undo.and_then(|()| self.reload(host, master)).and_then(|()| pending.clear());
            match undo {
                Ok(()) => bail!("{e:#}; the plain HTTP config was restored and nginx reloaded"),
                Err(u) => bail!("{e:#}; restoring the plain HTTP config failed too: {u:#}"),
            }
        }
        pending.clear()
    }

    fn plan_tls(&self, plan: &mut Plan<Action>, o: &Observed, t: &crate::profile::NginxTls, state: &tls::State) {
        let names = t.domains.join(", ");
        let id = "nginx.tls.certificate";
        let title = format!("a certificate for {names} from {}", t.acme_directory);
        let obtain =
            format!("run certbot in webroot mode through the gateway's HTTP server, then serve HTTPS on {}", t.listen);
        match (&state.cert, state.usable(t)) {
            (Err(e), _) => {
                let f = Finding::unknown(id, title.clone(), e.clone());
                plan.pass(f);
                return;
            }
            (Ok(_), Some(cert)) => {
                let days = tls::days_left(cert.not_after, state.now);
                plan.gauges.push(Gauge {
                    name: "vakt_certificate_expiry_seconds",
                    help: "Seconds until the certificate's notAfter (negative once expired).",
                    labels: vec![("resource", "nginx".into()), ("cert", t.cert_name().into())],
                    value: (cert.not_after - state.now) as f64,
                });
                // The names and days left are in the title: text output shows no evidence of
                // compliant items, and this is what an operator reads the audit for.
                let title = format!("{title}: names {}, expires in {days} days", cert.names.join(", "));
                let evidence = [format!("read from {}", state.cert_path.display())];
                if !state.needs_certbot(t) {
                    let mut f = Finding::ok(id, title);
                    f.evidence.extend(evidence);
                    plan.pass(f);
                } else if o.offline {
                    let mut f = Finding::deferred(id, title, "renew it with certbot");
                    f.evidence.extend(evidence);
                    plan.pass(f);
                } else {
                    let mut f = Finding::drift(
                        id,
                        title,
                        format!(
                            "renew it with certbot (it has less than {} left)",
                            crate::profile::units::format_duration(t.expiry_warn)
                        ),
                    );
                    f.evidence.extend(evidence);
                    plan.fix(f, Action::Obtain);
                }
            }
            (Ok(cert), None) => {
                let why = match cert {
                    None => format!("no certificate in {}", state.cert_path.display()),
                    Some(c) if c.not_after <= state.now => format!("{} expired", state.cert_path.display()),
                    Some(c) if !t.domains.iter().all(|d| c.names.contains(d)) => {
                        format!("{} covers only {}", state.cert_path.display(), c.names.join(", "))
                    }
                    Some(_) => "the key or the chain is missing beside it".to_string(),
                };
                if o.offline {
                    plan.pass(Finding::deferred(id, title, obtain).with_evidence(why));
                } else if o.validation.is_err() {
                    // certbot needs the HTTP config live, which nginx -t did not pass.
                    plan.pass(Finding::new(id, title, Status::Drift).with_evidence(why));
                } else {
                    plan.fix(Finding::drift(id, title, obtain).with_evidence(why), Action::Obtain);
                }
            }
        }
        let hook_ok = state.hook_current.as_deref() == Some(state.hook_rendered.as_str()) && state.hook_executable;
        let hook_title = format!("certbot's deploy hook {} reloads nginx through vakt", state.hook_path.display());
        if hook_ok {
            plan.pass(Finding::ok("nginx.tls.hook", hook_title));
        } else {
            let f = Finding::drift("nginx.tls.hook", hook_title, format!("write {}", state.hook_path.display()));
            plan.fix(f, Action::WriteHook(state.hook_path.clone(), state.hook_rendered.clone()));
        }
        let served = "nginx serves the certificate on disk";
        match &state.served {
            tls::Served::NotAsked => {}
            tls::Served::Same => plan.pass(Finding::ok("nginx.tls.served", served)),
            tls::Served::Other => plan.fix(
                Finding::drift("nginx.tls.served", served, "reload nginx (nginx -t has passed with it)")
                    .with_evidence("nginx serves another certificate: certbot renewed it since the last reload"),
                Action::Reload,
            ),
            tls::Served::Unknown(e) => plan.pass(Finding::unknown("nginx.tls.served", served, e.clone())),
        }
    }
}

impl Nginx<'_> {
    /// Puts back what apply changed: the previous config (or none) and the placeholder link.
    fn undo(&self, o: &Observed, wrote: bool, unlinked: Option<&(PathBuf, PathBuf)>) -> anyhow::Result<()> {
        if wrote {
            match &o.current {
                Some(old) => fsutil::write_atomic(&o.path, old.as_bytes(), false)?,
                None => {
                    std::fs::remove_file(&o.path).with_context(|| format!("failed to remove {}", o.path.display()))?
                }
            }
        }
        if let Some((link, target)) = unlinked {
            std::os::unix::fs::symlink(target, link)
                .with_context(|| format!("failed to restore {}", link.display()))?;
        }
        Ok(())
    }
}

fn default_site_finding(link: &Path) -> Finding {
    Finding::drift(
        "nginx.default-site",
        "Debian's placeholder site does not claim the default server in front of the gateway",
        format!("remove the link {} (its file stays in sites-available)", link.display()),
    )
    .with_evidence("it listens on port 80 as default_server; set [nginx] default_site = \"keep\" to keep it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx(extra: &str) -> Wanted {
        crate::profile::parse("t", &format!("[nginx]\n{extra}")).expect("valid").nginx.expect("nginx")
    }

    #[test]
    fn default_render_has_the_articles_settings() {
        let conf = render(&nginx(""), false);
        for line in [
            "keepalive_timeout 65s;",
            "keepalive_requests 10000;",
            "client_body_buffer_size 128k;",
            "client_max_body_size 50m;",
            "server 127.0.0.1:8080;",
            "keepalive 16;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header X-Real-IP $remote_addr;",
            "proxy_read_timeout 300s;",
        ] {
            assert!(conf.contains(line), "missing {line}:\n{conf}");
        }
    }

    #[test]
    fn tls_renders_the_challenge_first_then_the_tls_server() {
        let n = nginx("[nginx.tls]\ndomains = [\"gw.example.com\"]\nemail = \"ops@example.com\"\nhsts = true\n");
        let http = render(&n, false);
        assert!(
            http.contains("location ^~ /.well-known/acme-challenge/ {\n            root /var/www/vakt-acme;"),
            "{http}"
        );
        assert!(http.contains("proxy_pass http://faas_gateway;") && !http.contains("ssl"), "{http}");
        let https = render(&n, true);
        for line in [
            "listen 443 ssl default_server;",
            "server_name gw.example.com;",
            "ssl_certificate /etc/letsencrypt/live/gw.example.com/fullchain.pem;",
            "ssl_certificate_key /etc/letsencrypt/live/gw.example.com/privkey.pem;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "add_header Strict-Transport-Security \"max-age=31536000\" always;",
            "return 301 https://$host$request_uri;",
        ] {
            assert!(https.lines().any(|l| l.trim() == line), "missing {line}:\n{https}");
        }
        assert_eq!(https.matches("proxy_pass http://faas_gateway;").count(), 1, "plain HTTP only redirects");
        crate::invariants::check(
            &crate::profile::parse("t", "[nginx.tls]\ndomains = [\"a.example\"]\nemail = \"a@b.example\"\n")
                .expect("valid"),
        )
        .expect("invariants");
    }

    #[test]
    fn lints_explain_self_defeating_settings() {
        let w = lint(
            &nginx("proxy_http_version = \"1.0\"\nproxy_read_timeout = \"30s\"\nclient_max_body_size = \"64k\"\n"),
            &[8080],
        );
        let all = w.join("\n");
        assert!(all.contains("keepalive is inert"), "{all}");
        assert!(all.contains("504"), "{all}");
        assert!(all.contains("buffer can never fill"), "{all}");
        assert!(all.contains("bypass nginx"), "{all}");
        assert!(lint(&nginx(""), &[22, 80]).is_empty());
    }
}
