//! HTTPS for the gateway: the certificate certbot keeps for `[nginx.tls]` (read and judged
//! here), certbot's argv to obtain it in webroot mode, the deploy hook that hands renewals back
//! to vakt, the TLS parts of nginx.conf, and whether nginx serves the certificate on disk.

use std::fmt::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::host::Host;
use crate::profile::{Listen, NginxTls, Origin};

/// certbot's own bound is its HTTP timeouts; this only stops a wedged run from holding apply.
const CERTBOT_TIMEOUT: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a PEM certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The DNS names of its subjectAltName extension.
    pub names: Vec<String>,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
    /// The DER bytes, to compare with what nginx serves.
    pub der: Vec<u8>,
}

/// Parses the first certificate of a PEM file (certbot's `cert.pem`, or a chain's leaf).
pub fn parse_cert(pem: &[u8]) -> Result<CertInfo, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(crate::escape::controls(&d.to_ascii_lowercase()));
            }
        }
    }
    Ok(CertInfo { names, not_after: cert.validity().not_after.timestamp(), der: pem.contents.clone() })
}

/// The DER of the first certificate `openssl s_client` printed, if any.
pub fn served_der(s_client_stdout: &str) -> Option<Vec<u8>> {
    let start = s_client_stdout.find("-----BEGIN CERTIFICATE-----")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&s_client_stdout.as_bytes()[start..]).ok()?;
    Some(pem.contents)
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether nginx serves the certificate on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Not asked: nginx does not run, or does not run the TLS config yet.
    NotAsked,
    Same,
    Other,
    Unknown(String),
}

/// The observed TLS state.
#[derive(Debug)]
pub struct State {
    pub cert_path: PathBuf,
    /// The certificate certbot keeps for the profile's names; `Err` when it cannot be read.
    pub cert: Result<Option<CertInfo>, String>,
    pub key_present: bool,
    pub hook_path: PathBuf,
    pub hook_current: Option<String>,
    pub hook_executable: bool,
    pub hook_rendered: String,
    pub served: Served,
    pub now: i64,
}

impl State {
    /// The certificate nginx can use now: it covers every name, has its key and has not expired.
    pub fn usable(&self, t: &NginxTls) -> Option<&CertInfo> {
        let cert = self.servable()?;
        t.domains.iter().all(|d| cert.names.contains(d)).then_some(cert)
    }

    /// A certificate nginx can serve while a new one is obtained: its key is there and it has
    /// not expired, whichever names it covers. HTTPS stays up on it for the names it has
    /// (clients that received HSTS need it); certbot's challenge is answered on port 80 by the
    /// TLS config as well.
    pub fn servable(&self) -> Option<&CertInfo> {
        let cert = self.cert.as_ref().ok()?.as_ref()?;
        (self.key_present && cert.not_after > self.now).then_some(cert)
    }

    /// Whether certbot has to be asked: no usable certificate, or one inside the warning window.
    pub fn needs_certbot(&self, t: &NginxTls) -> bool {
        self.usable(t).is_none_or(|c| c.not_after - self.now < secs(t.expiry_warn))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Days left until `not_after`, rounded down (negative once expired).
pub fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

pub fn observe(host: &Host, t: &NginxTls, origin: &Origin) -> State {
    let live = host.path(t.live_dir());
    let cert_path = live.join("cert.pem");
    let cert = match crate::fsutil::read_file(&cert_path) {
        Ok(pem) => parse_cert(&pem).map(Some).map_err(|e| format!("{}: {e}", cert_path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("failed to read {}: {e}", cert_path.display())),
    };
    let key_present = live.join("privkey.pem").exists() && live.join("fullchain.pem").exists();
    let hook_path = host.file_path(hook_path(t));
    let hook_current = crate::fsutil::read_text(host.path(self::hook_path(t))).ok();
    let hook_executable =
        std::fs::metadata(host.path(self::hook_path(t))).is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111);
    let hook_rendered = hook_script(&vakt_exe(host), &profile_arg(host, origin));
    State {
        cert_path,
        cert,
        key_present,
        hook_path,
        hook_current,
        hook_executable,
        hook_rendered,
        served: Served::NotAsked,
        now: now(),
    }
}

/// Asks nginx's TLS listener, with the first name as SNI, which certificate it serves.
pub fn probe_served(host: &Host, t: &NginxTls, on_disk: &CertInfo) -> Served {
    let connect = match t.listen {
        Listen::Port(p) => format!("127.0.0.1:{p}"),
        Listen::Addr(a) if a.ip().is_unspecified() && a.is_ipv6() => format!("[::1]:{}", a.port()),
        Listen::Addr(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Listen::Addr(a) => a.to_string(),
    };
    let argv = ["openssl", "s_client", "-connect", &connect, "-servername", t.cert_name()];
    match host.runner.run(&argv, &[], PROBE_TIMEOUT) {
        Ok(out) => match served_der(&out.stdout) {
            Some(der) if der == on_disk.der => Served::Same,
            Some(_) => Served::Other,
            None => Served::Unknown(format!("no certificate from {connect}: {}", last_lines(&out.stderr, 2))),
        },
        Err(e) => Served::Unknown(format!("{e:#}")),
    }
}

/// The deploy hook certbot runs after each renewal (`renewal-hooks/deploy/`).
pub fn hook_path(t: &NginxTls) -> PathBuf {
    t.certbot_config_dir.join("renewal-hooks/deploy/vakt-nginx")
}

/// The vakt the hook runs: this one on a live host; the packaged one in an image prepared
/// offline (`--root`), where this machine's binary does not exist.
fn vakt_exe(host: &Host) -> PathBuf {
    let installed = PathBuf::from("/usr/bin/vakt");
    if !host.is_live() {
        return installed;
    }
    std::env::current_exe().unwrap_or(installed)
}

/// Single-quoted for sh.
fn sh_quote(text: &str) -> String {
    crate::escape::sh_quoted(text)
}

/// The profile as the hook's `-p` names it: a builtin, or the file's absolute path as the host
/// sees it (under `--root`, the image's path); `None` for the system profile, which the hook
/// finds again without `-p`.
fn profile_arg(host: &Host, origin: &Origin) -> Option<String> {
    match origin {
        Origin::System => None,
        Origin::Builtin(name) => Some(format!("builtin:{name}")),
        Origin::File(path) => {
            let seen = match path.strip_prefix(host.root()) {
                Ok(inside) if !host.is_live() => Path::new("/").join(inside),
                _ => path.clone(),
            };
            Some(seen.to_string_lossy().into_owned())
        }
    }
}

/// Set in the environment of vakt's own certbot run, which certbot passes on to its deploy
/// hooks: vakt's hook then does nothing, as the vakt that started certbot reloads nginx itself
/// once certbot returns (running `vakt apply` there would wait for that vakt's lock).
pub const IN_VAKT: &str = "VAKT_CERTBOT_RUN";

/// The hook runs vakt itself, so a renewal reaches nginx the way every change does: `nginx -t`
/// on a staged copy (which loads the new certificate), a reload only when nginx serves another
/// certificate than the one on disk, the previous state restored if the reload fails.
pub fn hook_script(vakt: &Path, profile: &Option<String>) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(s, "# Managed by vakt ([nginx.tls]); certbot runs it after renewing a certificate.");
    let _ = writeln!(s, "# vakt validates nginx with the new certificate, reloads it, and rolls back on failure.");
    let _ = writeln!(s, "# Inside vakt's own certbot run, that vakt reloads nginx itself once certbot returns.");
    let _ = writeln!(s, "[ -z \"${IN_VAKT}\" ] || exit 0");
    let p = profile.as_deref().map(|p| format!(" -p {}", sh_quote(p))).unwrap_or_default();
    let _ = writeln!(s, "exec {} apply --only nginx{p}", sh_quote(&vakt.to_string_lossy()));
    s
}

pub fn write_hook(path: &Path, script: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(path, script.as_bytes(), false)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make {} executable", path.display()))
}

/// `certbot certonly` in webroot mode for every name, non-interactive, with the profile's ACME
/// directory and certbot's directories. Every value is validated by the profile (no value can
/// start with `-`).
pub fn certbot_argv(t: &NginxTls) -> Vec<String> {
    let mut argv: Vec<String> =
        ["certbot", "certonly", "--non-interactive", "--agree-tos", "--no-eff-email"].map(String::from).to_vec();
    let dir = |p: &Path| p.display().to_string();
    for (flag, value) in [
        ("--email", t.email.clone()),
        ("--server", t.acme_directory.clone()),
        ("--config-dir", dir(&t.certbot_config_dir)),
        ("--work-dir", dir(&t.certbot_work_dir)),
        ("--logs-dir", dir(&t.certbot_logs_dir)),
        ("--cert-name", t.cert_name().to_string()),
        ("--webroot", String::new()),
        ("--webroot-path", dir(&t.webroot)),
    ] {
        argv.push(flag.into());
        if !value.is_empty() {
            argv.push(value);
        }
    }
    for d in &t.domains {
        argv.extend(["-d".to_string(), d.clone()]);
    }
    argv
}

/// Runs certbot; the error carries certbot's own last words. Returns what certbot said of
/// deploy hooks that failed (`Hook 'deploy-hook' reported error code 1`): the certificate is
/// there, but something the operator relies on did not run.
pub fn obtain(host: &Host, t: &NginxTls) -> anyhow::Result<Vec<String>> {
    let webroot = host.path(&t.webroot);
    std::fs::create_dir_all(&webroot).with_context(|| format!("failed to create {}", webroot.display()))?;
    let argv = certbot_argv(t);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = host.runner.run(&argv, &[(IN_VAKT, "1")], CERTBOT_TIMEOUT)?;
    if !out.success {
        bail!(
            "certbot could not obtain a certificate for {} from {}: {}",
            t.domains.join(", "),
            t.acme_directory,
            last_lines(if out.stderr.trim().is_empty() { &out.stdout } else { &out.stderr }, 4)
        );
    }
    Ok(failed_hooks(&out.stderr))
}

/// certbot's lines about hooks that failed (its `report_executed_command`), escaped.
pub fn failed_hooks(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.starts_with("Hook ") && (l.contains("reported error code") || l.contains("ran with error output"))
        })
        .map(|l| crate::escape::controls(l.trim()))
        .collect()
}

/// The last `n` meaningful lines of a tool's output, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Saving debug log") && !l.starts_with("Ask for help"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" ")
}

/// The ACME challenge location of the plain HTTP server: certbot's webroot, served as files.
pub fn render_challenge(c: &mut String, t: &NginxTls) {
    let _ = writeln!(c, "        # ACME HTTP-01 challenges, answered from certbot's webroot");
    let _ = writeln!(c, "        location ^~ /.well-known/acme-challenge/ {{");
    let _ = writeln!(c, "            root {};", t.webroot.display());
    let _ = writeln!(c, "            default_type text/plain;\n        }}\n");
}

/// The opening of the TLS server: modern protocols only, the full chain, HSTS when asked.
pub fn render_server_head(c: &mut String, t: &NginxTls) {
    let live = t.live_dir();
    let _ = writeln!(c, "\n    server {{\n        listen {} ssl default_server;", t.listen);
    let _ = writeln!(c, "        server_name {};\n", t.domains.join(" "));
    let _ = writeln!(c, "        ssl_certificate {};", live.join("fullchain.pem").display());
    let _ = writeln!(c, "        ssl_certificate_key {};", live.join("privkey.pem").display());
    let _ = writeln!(c, "        ssl_protocols TLSv1.2 TLSv1.3;");
    let _ = writeln!(c, "        ssl_prefer_server_ciphers off;");
    let _ = writeln!(c, "        ssl_session_timeout 1d;");
    let _ = writeln!(c, "        ssl_session_cache shared:vakt_tls:10m;");
    let _ = writeln!(c, "        ssl_session_tickets off;");
    if let Some(age) = t.hsts {
        let _ = writeln!(c, "        add_header Strict-Transport-Security \"max-age={}\" always;", age.as_secs());
    }
    c.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(extra: &str) -> NginxTls {
        let text = format!(
            "[nginx.tls]\ndomains = [\"gw.example.com\", \"api.example.com\"]\nemail = \"ops@example.com\"\n{extra}"
        );
        crate::profile::parse("t", &text).expect("valid").nginx.expect("nginx").tls.expect("tls")
    }

    #[test]
    fn certbot_argv_keeps_every_value_in_its_slot() {
        let t = tls("acme_directory = \"https://acme.internal:14000/dir\"\ncertbot_config_dir = \"/srv/le\"\n");
        let argv = certbot_argv(&t).join(" ");
        assert_eq!(
            argv,
            "certbot certonly --non-interactive --agree-tos --no-eff-email --email ops@example.com \
             --server https://acme.internal:14000/dir --config-dir /srv/le --work-dir /var/lib/letsencrypt \
             --logs-dir /var/log/letsencrypt --cert-name gw.example.com --webroot --webroot-path /var/www/vakt-acme \
             -d gw.example.com -d api.example.com"
        );
    }

    #[test]
    fn the_hook_quotes_its_paths_for_sh() {
        let s = hook_script(Path::new("/usr/bin/vakt"), &Some("builtin:openfaas-swarm".into()));
        assert!(s.ends_with("exec '/usr/bin/vakt' apply --only nginx -p 'builtin:openfaas-swarm'\n"), "{s}");
        assert!(hook_script(Path::new("/o'dd/vakt"), &None).contains("'/o'\\''dd/vakt'"));
        // Inside vakt's own certbot run it does nothing: that vakt holds the apply lock.
        assert!(s.contains("[ -z \"$VAKT_CERTBOT_RUN\" ] || exit 0\n"), "{s}");
    }

    /// Issue 23: the hook names the profile by its real path, whatever the path holds (` + `
    /// used to split it; a newline was shown escaped), and under `--root` by the image's path,
    /// running the installed vakt.
    #[test]
    fn the_hook_names_the_real_profile_and_the_installed_vakt() {
        let live = Host::new(Path::new("/"));
        let odd = Origin::File(PathBuf::from("/srv/a + b/new\nline.toml"));
        let s = hook_script(&vakt_exe(&live), &profile_arg(&live, &odd));
        assert!(s.contains("-p '/srv/a + b/new\nline.toml'\n"), "{s}");
        let image = tempfile::tempdir().expect("tempdir");
        let offline = Host::new(image.path());
        let inside = Origin::File(image.path().join("etc/vakt/site.toml"));
        let s = hook_script(&vakt_exe(&offline), &profile_arg(&offline, &inside));
        assert!(s.ends_with("exec '/usr/bin/vakt' apply --only nginx -p '/etc/vakt/site.toml'\n"), "{s}");
        assert!(
            hook_script(&vakt_exe(&offline), &profile_arg(&offline, &Origin::System)).ends_with("apply --only nginx\n")
        );
    }

    #[test]
    fn failed_deploy_hooks_are_read_from_certbots_output() {
        let err = "Saving debug log to /x\nHook 'deploy-hook' reported error code 1\nHook 'deploy-hook' ran with error output:\n boom\n";
        assert_eq!(
            failed_hooks(err),
            vec!["Hook 'deploy-hook' reported error code 1", "Hook 'deploy-hook' ran with error output:"]
        );
        assert!(failed_hooks("Successfully received certificate.\n").is_empty());
    }

    #[test]
    fn usable_needs_every_name_the_key_and_time_left() {
        let t = tls("expiry_warn = \"10d\"");
        let cert = CertInfo {
            names: vec!["gw.example.com".into(), "api.example.com".into()],
            not_after: 100 * 86_400,
            der: Vec::new(),
        };
        let mut s = State {
            cert_path: PathBuf::new(),
            cert: Ok(Some(cert)),
            key_present: true,
            hook_path: PathBuf::new(),
            hook_current: None,
            hook_executable: false,
            hook_rendered: String::new(),
            served: Served::NotAsked,
            now: 50 * 86_400,
        };
        assert!(s.usable(&t).is_some() && !s.needs_certbot(&t));
        s.now = 95 * 86_400;
        assert!(s.usable(&t).is_some() && s.needs_certbot(&t), "inside the warning window");
        s.now = 101 * 86_400;
        assert!(s.usable(&t).is_none(), "expired");
        s.now = 50 * 86_400;
        s.key_present = false;
        assert!(s.usable(&t).is_none(), "no key");
        s.key_present = true;
        if let Ok(Some(c)) = &mut s.cert {
            c.names.pop();
        }
        assert!(s.usable(&t).is_none(), "a name missing");
        assert_eq!(days_left(100 * 86_400, 95 * 86_400 + 1), 4);
    }

    #[test]
    fn reads_names_and_expiry_from_a_pem_certificate() {
        let pem = include_str!("../../../tests/fixtures/tls/cert.pem");
        let info = parse_cert(pem.as_bytes()).expect("parses");
        assert_eq!(info.names, vec!["gateway.test".to_string(), "api.gateway.test".to_string()]);
        // `openssl x509 -enddate` says notAfter=Jan  4 19:41:42 2031 GMT.
        assert_eq!(info.not_after, 1_925_322_102);
        assert_eq!(
            served_der(&format!("CONNECTED(00000003)\n---\nServer certificate\n{pem}subject=CN\n")),
            Some(info.der)
        );
        assert!(parse_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert_eq!(served_der("CONNECTED\nno peer certificate available\n"), None);
    }
}
