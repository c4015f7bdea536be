//! The `firewall` resource: ufw's state observed from its own files (and, on a live host,
//! from netfilter), converged through the `ufw` command only, with the SSH lockout guard and
//! the block that makes Docker-published ports obey the profile.

pub(crate) mod published;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

use super::ssh::{self, SshFacts};
use super::{Finding, Plan, Resource, Status};
use crate::host::Host;
use crate::profile::{Action as RuleAction, Firewall as Wanted, Policy, Proto, Published, Rule};
use published::Netfilter;

const UFW_TIMEOUT: Duration = Duration::from_secs(120);

/// One rule as ufw records it in `user.rules`/`user6.rules`:
/// `### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368`. The action word
/// carries the rule's logging as a suffix (`allow_log`, `deny_log-all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub action: String,
    /// `log` or `log-all` when the rule logs, else empty.
    pub log: String,
    pub proto: String,
    pub dport: String,
    pub dst: String,
    pub sport: String,
    pub src: String,
    pub direction: String,
    pub v6: bool,
    /// Application-profile rules and other forms vakt does not write; never pruned.
    pub foreign: bool,
}

#[derive(Debug, Clone)]
pub struct Observed {
    pub enabled: bool,
    pub ipv6: bool,
    pub incoming: Option<Policy>,
    pub outgoing: Option<Policy>,
    pub routed: Option<Policy>,
    pub rules: Vec<Tuple>,
    pub ssh: SshFacts,
    pub docker_present: bool,
    /// The image root when preparing one offline (`--root`): ufw then edits the image's
    /// files through its own `--rootdir`/`--datadir`, and what would touch this machine's
    /// netfilter is deferred to the first boot.
    pub offline: Option<PathBuf>,
    /// ufw's after.rules and after6.rules (IPv6 only when enabled): (v6, host path, text).
    pub after: Vec<(bool, PathBuf, String)>,
    /// The live filter table per family (v4, then v6 when enabled); `None` offline, `Err`
    /// when it could not be read.
    pub netfilter: Option<Result<Vec<(bool, Netfilter)>, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Vec<String>),
    /// Replace a file atomically, keeping the previous version as `<path>.vakt-prev`.
    Write(PathBuf, String),
}

pub struct Firewall<'p> {
    want: &'p Wanted,
    /// Ports that should not be open to the world, with the reason (swarm, the gateway).
    sensitive: Vec<(u16, String)>,
}

impl<'p> Firewall<'p> {
    pub fn new(want: &'p Wanted, sensitive: Vec<(u16, String)>) -> Self {
        Firewall { want, sensitive }
    }
}

/// Parses the tuple comments of a ufw rules file.
pub fn parse_rules(text: &str, v6: bool) -> Vec<Tuple> {
    text.lines()
        .filter_map(|l| l.strip_prefix("### tuple ### "))
        .map(|t| {
            let f: Vec<&str> = t.split_whitespace().filter(|w| !w.starts_with("comment=")).collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("").to_string();
            let word = get(0);
            let (action, log) = match word.split_once('_') {
                Some((action, log)) => (action.to_string(), log.to_string()),
                None => (word.clone(), String::new()),
            };
            Tuple {
                action,
                log,
                proto: get(1),
                dport: get(2),
                dst: get(3),
                sport: get(4),
                src: get(5),
                direction: f.last().copied().unwrap_or("").to_string(),
                v6,
                // Application-profile rules (9 fields), route rules (`route:allow`) and
                // interface-bound ones are not vakt's.
                foreign: f.len() != 7 || word.contains(':') || f[6] != "in",
            }
        })
        .collect()
}

/// `KEY=value` (quotes stripped) from ufw.conf or /etc/default/ufw.
pub(crate) fn setting(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_string())
}

fn any_net(v6: bool) -> &'static str {
    if v6 { "::/0" } else { "0.0.0.0/0" }
}

impl Tuple {
    fn matches(&self, rule: &Rule) -> bool {
        self.action == rule.action.as_str() && self.same_traffic(rule)
    }

    /// The same traffic whatever the action: ufw keeps one rule per traffic, and adding the
    /// profile's rule would *replace* this one ("Rule updated").
    fn same_traffic(&self, rule: &Rule) -> bool {
        let src = rule.from.map_or_else(|| any_net(self.v6).to_string(), |n| n.to_string());
        !self.foreign
            && self.direction == "in"
            && self.proto == rule.proto.as_str()
            && self.dport == rule.port_text()
            && self.dst == any_net(self.v6)
            && self.sport == "any"
            && self.src == src
    }

    fn describe(&self) -> String {
        let family = if self.v6 { " (v6)" } else { "" };
        let log = if self.log.is_empty() { String::new() } else { format!(" {}", self.log) };
        let to = if self.dst == any_net(self.v6) { String::new() } else { format!(" to {}", self.dst) };
        let sport = if self.sport == "any" { String::new() } else { format!(" port {}", self.sport) };
        format!(
            "{} {}{log} {}/{} from {}{sport}{to}{family}",
            self.direction, self.action, self.dport, self.proto, self.src
        )
    }

    /// The `ufw delete` command for this rule, when vakt can express it.
    fn delete_command(&self) -> Option<Vec<String>> {
        if self.foreign || self.direction != "in" {
            return None;
        }
        let mut argv = vec!["ufw".to_string(), "delete".into(), self.action.clone()];
        if !self.log.is_empty() {
            argv.push(self.log.clone());
        }
        if self.proto != "any" {
            argv.extend(["proto".into(), self.proto.clone()]);
        }
        let src = if self.src == any_net(self.v6) { "any".to_string() } else { self.src.clone() };
        argv.extend(["from".into(), src]);
        if self.sport != "any" {
            argv.extend(["port".into(), self.sport.clone()]);
        }
        let dst = if self.dst == any_net(self.v6) { "any".to_string() } else { self.dst.clone() };
        argv.extend(["to".into(), dst]);
        if self.dport != "any" {
            argv.extend(["port".into(), self.dport.clone()]);
        }
        Some(argv)
    }
}

fn rule_id(rule: &Rule) -> String {
    let from = rule.from.map(|n| format!("@{n}")).unwrap_or_default();
    let action = if rule.action == RuleAction::Allow { String::new() } else { format!(":{}", rule.action.as_str()) };
    format!("firewall.rule.{}/{}{from}{action}", rule.port_text(), rule.proto.as_str())
}

fn rule_title(rule: &Rule) -> String {
    let from = rule.from.map_or_else(|| "anywhere".to_string(), |n| n.to_string());
    let comment = rule.comment.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
    format!("{} {}/{} from {from}{comment}", rule.action.as_str(), rule.port_text(), rule.proto.as_str())
}

/// The ufw argv that adds a rule (`ufw allow ...`, `ufw limit ...`, `ufw deny ...`).
pub fn allow_command(rule: &Rule) -> Vec<String> {
    let mut argv = vec!["ufw".to_string(), rule.action.as_str().into()];
    if rule.proto != Proto::Both {
        argv.extend(["proto".into(), rule.proto.as_str().into()]);
    }
    argv.extend(["from".into(), rule.from.map_or_else(|| "any".into(), |n| n.to_string())]);
    argv.extend(["to".into(), "any".into(), "port".into(), rule.port_text()]);
    if let Some(c) = &rule.comment {
        argv.extend(["comment".into(), c.clone()]);
    }
    argv
}

/// `ufw --force enable`, `ufw disable`, `ufw reload` and raw iptables: they act on the
/// kernel's rules, not on files.
fn is_switch(argv: &[String]) -> bool {
    argv[0] != "ufw" || argv.iter().skip(1).any(|w| w == "enable" || w == "disable" || w == "reload")
}

/// A ufw command that acts on the files of the image at `root` (ufw's own relocation options).
fn in_root(argv: Vec<String>, root: &Path) -> Vec<String> {
    let root = root.display();
    let mut out = vec![argv[0].clone(), format!("--rootdir={root}"), format!("--datadir={root}")];
    out.extend(argv.into_iter().skip(1));
    out
}

/// A command as the operator would type it.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn families(rule: &Rule, ipv6: bool) -> Vec<bool> {
    match rule.from {
        None if ipv6 => vec![false, true],
        None => vec![false],
        Some(IpNet::V4(_)) => vec![false],
        Some(IpNet::V6(_)) => vec![true],
    }
}

impl Firewall<'_> {
    /// Refuses a plan that would leave incoming SSH denied: returns what to add, if anything.
    fn lockout(&self, o: &Observed) -> Option<String> {
        let mut missing = Vec::new();
        // Without a session to judge by, the admin networks say which families the operator
        // uses; otherwise both must stay open.
        let families: Vec<bool> = match (o.ssh.client, self.want.admin.is_empty()) {
            (None, false) => [false, true]
                .into_iter()
                .filter(|v6| self.want.admin.iter().any(|a| a.addr().is_ipv6() == *v6))
                .collect(),
            _ => vec![false, true],
        };
        for port in &o.ssh.ports {
            for &v6 in &families {
                if v6 && !o.ipv6 {
                    continue;
                }
                // A rule limited to a network counts only when it admits the operator: it
                // holds this session's client, or one of the profile's admin networks.
                let covered = self.want.host_rules().any(|r| {
                    r.action.admits()
                        && r.covers(*port, Proto::Tcp)
                        && r.from.is_none_or(|net| {
                            matches!(net, IpNet::V6(_)) == v6
                                && match o.ssh.client {
                                    Some(c) => net.contains(&c),
                                    None => self.want.admin.iter().any(|a| net.contains(a)),
                                }
                        })
                });
                if !covered {
                    missing.push(format!("{port}/tcp ({})", if v6 { "IPv6" } else { "IPv4" }));
                }
            }
        }
        if missing.is_empty() {
            return None;
        }
        let port = o.ssh.ports.iter().next().copied().unwrap_or(22);
        Some(format!(
            "refusing to change the firewall: with incoming {} SSH would be blocked on {}; add to the profile:\n  [[firewall.allow]]\n  port = {port}\n  proto = \"tcp\"\n  comment = \"ssh\"",
            self.want.incoming.as_str(),
            missing.join(", ")
        ))
    }
}

/// The live filter tables, v4 then v6: read-only (`iptables-save` lists, it changes nothing).
fn read_netfilter(host: &Host, ipv6: bool) -> Result<Vec<(bool, Netfilter)>, String> {
    let mut out = Vec::new();
    for (v6, tool) in [(false, "iptables-save"), (true, "ip6tables-save")] {
        if v6 && !ipv6 {
            continue;
        }
        let save = host
            .runner
            .run_ok(&[tool, "-t", "filter"], Duration::from_secs(10))
            .map_err(|e| format!("could not read the live firewall: {e:#}"))?;
        out.push((v6, published::parse_save(&save.stdout, v6)));
    }
    Ok(out)
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

impl Firewall<'_> {
    /// vakt's block in after.rules/after6.rules: written when the profile governs published
    /// ports, removed when it does not. Returns whether a file changes.
    fn plan_published_files(&self, o: &Observed, plan: &mut Plan<Action>) -> bool {
        let on = self.want.published == Published::Profile;
        let mut wrote = false;
        for (v6, path, text) in &o.after {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let id = format!("firewall.published-ports.{name}");
            let title = if on {
                format!("Docker-published ports obey the profile: vakt's DOCKER-USER block in {name}")
            } else {
                format!("no vakt block in {name} (published_ports = \"docker\")")
            };
            let block = on.then(|| published::block(self.want, *v6));
            match published::splice(text, block.as_deref(), &path.display().to_string()) {
                Err(e) => plan.pass(Finding::new(id, title, Status::Failed).with_evidence(e.to_string())),
                Ok(new) if new == *text => plan.pass(Finding::ok(id, title)),
                Ok(new) => {
                    let verb = if on { "write" } else { "remove" };
                    let change =
                        format!("{verb} vakt's block in {} (previous kept as {name}.vakt-prev)", path.display());
                    let mut f = Finding::drift(id, title, change);
                    f.diff =
                        Some(similar::TextDiff::from_lines(text, &new).unified_diff().header(&name, &name).to_string());
                    f.evidence.push(format!(
                        "{} rules for {}",
                        published::chain_rules(self.want, *v6).len(),
                        family(*v6)
                    ));
                    plan.fix(f, Action::Write(path.clone(), new));
                    wrote = true;
                }
            }
        }
        wrote
    }

    /// What netfilter really holds: ufw's rules loaded when ufw.conf says enabled, vakt's
    /// DOCKER-USER rules loaded (or gone, once the profile stops governing published ports).
    /// One `ufw reload` fixes whatever a reload fixes.
    fn plan_live(
        &self,
        o: &Observed,
        plan: &mut Plan<Action>,
        wrote: bool,
        run: &impl Fn(Vec<String>) -> (String, Action),
    ) {
        let want = self.want;
        let on = want.published == Published::Profile;
        let enabling = plan.actions.iter().any(|a| matches!(a, Action::Run(v) if v.iter().any(|w| w == "enable")));
        let active = o.enabled && want.enabled && !enabling;
        let reload = |plan: &mut Plan<Action>, f: Finding| {
            let (text, action) = run(vec!["ufw".into(), "reload".into()]);
            let f = Finding { change: Some(text), ..f };
            if plan.actions.contains(&action) {
                plan.pass(f);
            } else {
                plan.fix(f, action);
            }
        };
        // Removing the block needs no reload: ufw never loads DOCKER-USER again, and vakt's
        // rules leave the kernel below.
        if active && wrote && on {
            reload(plan, Finding::new("firewall.reload", "load the changed after.rules into netfilter", Status::Drift));
        }
        let families = match &o.netfilter {
            None => return,
            Some(Err(e)) => {
                if o.enabled || on {
                    plan.pass(Finding::unknown("firewall.live", "ufw's rules loaded in netfilter", e.clone()));
                }
                return;
            }
            Some(Ok(f)) => f,
        };
        for (v6, nf) in families {
            let suffix = if *v6 { ".v6" } else { "" };
            if o.enabled {
                let id = format!("firewall.loaded{suffix}");
                let title = format!("ufw's rules are loaded in netfilter ({})", family(*v6));
                if nf.ufw_loaded {
                    plan.pass(Finding::ok(id, title));
                } else {
                    let f = Finding::new(id, title, Status::Drift).with_evidence(
                        "ENABLED=yes in ufw.conf, but ufw's chains are not in the kernel (flushed, or ufw failed at boot): \
                         the host is not filtered",
                    );
                    if active {
                        reload(plan, f);
                    } else {
                        plan.pass(f);
                    }
                }
            }
            let loaded = nf.docker_user.as_deref().unwrap_or_default();
            let id = format!("firewall.published-ports.live{suffix}");
            if on && o.enabled && want.enabled && nf.ufw_loaded {
                let title = format!("vakt's DOCKER-USER rules are loaded ({})", family(*v6));
                let hooked = if nf.docker_user_hooked {
                    "FORWARD sends traffic to DOCKER-USER first"
                } else {
                    "DOCKER-USER is not hooked into FORWARD yet (Docker hooks it when it starts)"
                };
                if published::loaded_matches(loaded, &published::chain_rules(want, *v6)) {
                    plan.pass(Finding::ok(id, title).with_evidence(hooked));
                } else if !wrote {
                    reload(plan, Finding::new(id, title, Status::Drift).with_evidence(hooked));
                }
            } else if !on && published::has_vakt_rules(loaded) {
                let tool = if *v6 { "ip6tables" } else { "iptables" };
                let argvs = [vec![tool, "-F", "DOCKER-USER"], vec![tool, "-A", "DOCKER-USER", "-j", "RETURN"]];
                let (texts, actions): (Vec<String>, Vec<Action>) =
                    argvs.into_iter().map(|a| run(a.into_iter().map(String::from).collect())).unzip();
                let f = Finding::drift(
                    id,
                    format!("vakt's DOCKER-USER rules are gone ({})", family(*v6)),
                    texts.join("; "),
                )
                .with_evidence(
                    "published_ports = \"docker\": Docker's own rules decide; ufw does not manage DOCKER-USER",
                );
                plan.findings.push(f);
                plan.actions.extend(actions);
            }
        }
    }
}

impl Resource for Firewall<'_> {
    type Observed = Observed;
    type Action = Action;

    fn id(&self) -> &'static str {
        "firewall"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let conf = host
            .read("/etc/ufw/ufw.conf")
            .context("ufw is not installed or not set up; add `ufw` to [packages] install")?;
        let defaults = host.read("/etc/default/ufw")?;
        let ipv6 = setting(&defaults, "IPV6").is_none_or(|v| v == "yes");
        let mut rules = parse_rules(&host.read("/etc/ufw/user.rules")?, false);
        if ipv6 {
            rules.extend(parse_rules(&host.read_opt("/etc/ufw/user6.rules").unwrap_or_default(), true));
        }
        let policy = |key| setting(&defaults, key).and_then(|v| Policy::parse(&v));
        let mut after = Vec::new();
        for (v6, path) in [(false, "/etc/ufw/after.rules"), (true, "/etc/ufw/after6.rules")] {
            if !v6 || ipv6 {
                let text = match host.read(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    other => other?,
                };
                after.push((v6, host.path(path), text));
            }
        }
        let netfilter = host.is_live().then(|| read_netfilter(host, ipv6));
        Ok(Observed {
            enabled: setting(&conf, "ENABLED").is_some_and(|v| v == "yes"),
            ipv6,
            incoming: policy("DEFAULT_INPUT_POLICY"),
            outgoing: policy("DEFAULT_OUTPUT_POLICY"),
            routed: policy("DEFAULT_FORWARD_POLICY"),
            rules,
            ssh: ssh::discover(host),
            docker_present: host.runs_docker(),
            offline: (!host.is_live()).then(|| host.root().to_path_buf()),
            after,
            netfilter,
        })
    }

    fn plan(&self, o: &Observed) -> Plan<Action> {
        let mut plan = Plan::default();
        let want = self.want;
        // Offline, ufw edits the image's files as long as the image's ufw is disabled: then
        // it loads nothing into a kernel. Enabling (or an enabled image) waits for the first boot.
        let defer = |argv: &[String]| o.offline.is_some() && (o.enabled || is_switch(argv));
        let run = |argv: Vec<String>| {
            let argv = match &o.offline {
                Some(root) if !defer(&argv) => in_root(argv, root),
                _ => argv,
            };
            (shell_words(&argv), Action::Run(argv))
        };

        let wrote = self.plan_published_files(o, &mut plan);
        for rule in want.host_rules() {
            let missing: Vec<bool> = families(rule, o.ipv6)
                .into_iter()
                .filter(|v6| !o.rules.iter().any(|t| t.v6 == *v6 && t.matches(rule)))
                .collect();
            // An operator's rule that blocks the same traffic (a limit on 22, a deny) would be
            // replaced by the add, silently: refuse, and say how to keep or drop it.
            let replaced = o.rules.iter().find(|t| {
                missing.contains(&t.v6)
                    && t.same_traffic(rule)
                    && t.action != "allow"
                    && t.action != rule.action.as_str()
            });
            if missing.is_empty() {
                plan.pass(Finding::ok(rule_id(rule), rule_title(rule)));
            } else if let Some(t) = replaced {
                let title = format!("{}: ufw would replace an existing {} rule", rule_title(rule), t.action);
                plan.pass(
                    Finding::new(rule_id(rule), title, Status::Failed)
                        .with_evidence(format!("ufw holds: {}", t.describe()))
                        .with_evidence(format!(
                            "keep it: list it in the profile as [[firewall.rule]] with action = \"{}\"; or delete it yourself if the profile's {} should win",
                            t.action,
                            rule.action.as_str()
                        )),
                );
            } else {
                let (text, action) = run(allow_command(rule));
                let fams: Vec<&str> = missing.iter().map(|v6| if *v6 { "IPv6" } else { "IPv4" }).collect();
                plan.fix(
                    Finding::drift(rule_id(rule), rule_title(rule), text)
                        .with_evidence(format!("missing for {}", fams.join(" and "))),
                    action,
                );
            }
            if rule.from.is_none() && rule.action.admits() {
                for (port, why) in &self.sensitive {
                    if rule.covers(*port, Proto::Tcp) {
                        plan.warn(format!("port {port} ({why}) is open to the world; limit it with `from = \"CIDR\"`"));
                    }
                }
            }
            if rule.from.is_some_and(|n| n.addr().is_ipv6()) && !o.ipv6 {
                plan.warn(format!("{}: IPv6 is disabled in /etc/default/ufw, the rule cannot apply", rule_id(rule)));
            }
        }
        let wanted = |t: &Tuple| want.host_rules().any(|r| t.matches(r) && families(r, o.ipv6).contains(&t.v6));
        for extra in o.rules.iter().filter(|t| !wanted(t)) {
            let id = format!("firewall.extra.{}", extra.describe().replace(' ', "_"));
            match extra.delete_command() {
                // vakt owns allow rules only: pruning one can only close the firewall. A deny,
                // limit or reject rule it did not list (fail2ban's bans, an operator's block)
                // is never deleted.
                Some(_) if extra.action != "allow" => plan.warn(format!(
                    "{} rule not in the profile, kept (vakt never deletes a rule that blocks): {}",
                    extra.action,
                    extra.describe()
                )),
                Some(argv) if want.prune => {
                    // `ufw delete ... from any` removes both families at once: plan it once.
                    let (text, action) = run(argv);
                    if plan.actions.contains(&action) {
                        plan.pass(Finding::drift(id, format!("extra rule {}", extra.describe()), text));
                    } else {
                        plan.fix(Finding::drift(id, format!("extra rule {}", extra.describe()), text), action);
                    }
                }
                Some(_) => plan
                    .warn(format!("extra rule not in the profile, left alone (prune = false): {}", extra.describe())),
                None => plan.warn(format!("rule vakt does not manage, left alone: {}", extra.describe())),
            }
        }
        for (name, wanted, got) in [
            ("incoming", want.incoming, o.incoming),
            ("outgoing", want.outgoing, o.outgoing),
            ("routed", want.routed, o.routed),
        ] {
            // ufw shows "disabled" for routed while the kernel does not forward; its file says DROP.
            let wanted = if wanted == Policy::Disabled { Policy::Deny } else { wanted };
            let id = format!("firewall.policy.{name}");
            let title = format!("default {name} policy {}", wanted.as_str());
            if got == Some(wanted) {
                plan.pass(Finding::ok(id, title));
            } else {
                let (text, action) = run(vec!["ufw".into(), "default".into(), wanted.as_str().into(), name.into()]);
                let was = got.map_or("unset", |p| p.as_str());
                plan.fix(Finding::drift(id, title, text).with_evidence(format!("now {was}")), action);
            }
        }
        let title = if want.enabled { "ufw enabled" } else { "ufw disabled" };
        if o.enabled == want.enabled {
            plan.pass(Finding::ok("firewall.enabled", title));
        } else {
            let argv = if want.enabled { vec!["ufw", "--force", "enable"] } else { vec!["ufw", "disable"] };
            let (text, action) = run(argv.into_iter().map(String::from).collect());
            plan.fix(Finding::drift("firewall.enabled", title, text), action);
        }
        self.plan_live(o, &mut plan, wrote, &run);
        if o.docker_present && want.published == Published::Docker {
            plan.warn(
                "Docker is present: ports it publishes bypass ufw (DNATed before ufw's INPUT rules, accepted in \
                 FORWARD); set `published_ports = \"profile\"` in [firewall] to make the profile govern them",
            );
        }
        let locks_out = want.enabled && want.incoming != Policy::Allow;
        if locks_out
            && !plan.actions.is_empty()
            && let Some(refusal) = self.lockout(o)
        {
            let mut guard = Finding::new("firewall.ssh-guard", refusal, Status::Failed);
            guard.evidence = o.ssh.evidence.clone();
            plan.actions.clear();
            for f in plan.findings.iter_mut().filter(|f| f.change.is_some()) {
                f.evidence
                    .push("refused: the SSH lockout guard stopped every firewall change (firewall.ssh-guard)".into());
            }
            plan.findings.push(guard);
        }
        let deferred: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Run(argv) if defer(argv) => Some(shell_words(argv)),
                _ => None,
            })
            .collect();
        plan.actions.retain(|a| !matches!(a, Action::Run(argv) if defer(argv)));
        for f in plan.findings.iter_mut() {
            if let Some(change) = f.change.take_if(|c| f.status == Status::Drift && deferred.contains(c)) {
                *f = Finding::deferred(f.id.clone(), f.title.clone(), change);
            }
        }
        plan
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Run(argv) => {
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    host.runner.run_ok(&argv, UFW_TIMEOUT)?;
                }
                Action::Write(path, text) => crate::fsutil::write_atomic(&path, text.as_bytes(), true)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_RULES: &str = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368\n\
        -A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\
        ### tuple ### allow tcp 2377 0.0.0.0/0 any 10.0.0.0/8 in comment=737761726d\n\
        ### tuple ### allow udp 6000:6007 0.0.0.0/0 any 0.0.0.0/0 in\n\
        ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n";

    fn profile(text: &str) -> Wanted {
        crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
    }

    fn observed(rules: Vec<Tuple>) -> Observed {
        Observed {
            enabled: true,
            ipv6: false,
            incoming: Some(Policy::Deny),
            outgoing: Some(Policy::Allow),
            routed: Some(Policy::Deny),
            rules,
            ssh: SshFacts { ports: [22].into(), client: None, evidence: vec![] },
            docker_present: false,
            offline: None,
            after: vec![],
            netfilter: None,
        }
    }

    #[test]
    fn parses_tuples_and_marks_app_rules_foreign() {
        let rules = parse_rules(USER_RULES, false);
        assert_eq!(rules.len(), 4);
        assert_eq!((rules[1].dport.as_str(), rules[1].src.as_str()), ("2377", "10.0.0.0/8"));
        assert!(!rules[0].foreign && rules[3].foreign);
    }

    #[test]
    fn converged_state_plans_nothing() {
        let want = profile(
            "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\nfrom = \"10.0.0.0/8\"\n[[firewall.allow]]\nport = \"6000:6007\"\nproto = \"udp\"\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(parse_rules(USER_RULES, false)));
        assert!(plan.actions.is_empty(), "{:?}", plan.findings);
        assert!(plan.warnings.iter().any(|w| w.contains("does not manage")), "the app rule is reported, not pruned");
    }

    #[test]
    fn missing_rules_and_prune_plan_exact_commands() {
        let want = profile(
            "[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\ncomment = \"web server\"\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(parse_rules(USER_RULES, false)));
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                "ufw allow proto tcp from any to any port 80 comment 'web server'",
                "ufw delete allow proto tcp from 10.0.0.0/8 to any port 2377",
                "ufw delete allow proto udp from any to any port 6000:6007",
            ]
        );
    }

    #[test]
    fn logging_tuples_keep_their_action_and_delete_with_their_log_word() {
        let rules = parse_rules(
            "### tuple ### allow_log tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### deny_log-all any any 0.0.0.0/0 any 198.51.100.7 in\n\
             ### tuple ### route:allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in\n",
            false,
        );
        assert_eq!((rules[0].action.as_str(), rules[0].log.as_str()), ("allow", "log"));
        assert_eq!(
            rules[0].delete_command().map(|a| a.join(" ")),
            Some("ufw delete allow log proto tcp from any to any port 80".into())
        );
        assert_eq!((rules[1].action.as_str(), rules[1].log.as_str()), ("deny", "log-all"));
        assert!(rules[2].foreign, "route rules are not vakt's");
    }

    #[test]
    fn an_add_that_would_replace_an_operators_limit_is_refused() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n");
        let plan = Firewall::new(&want, vec![])
            .plan(&observed(parse_rules("### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n", false)));
        assert!(plan.actions.is_empty(), "no `ufw allow 22`: it would turn the limit into an allow");
        let f = plan.findings.iter().find(|f| f.id == "firewall.rule.22/tcp").expect("finding");
        assert_eq!(f.status, Status::Failed);
        assert!(f.evidence.iter().any(|e| e.contains("action = \"limit\"")), "{:?}", f.evidence);
    }

    #[test]
    fn prune_never_deletes_a_rule_that_blocks() {
        let want = profile("[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n");
        let existing = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### deny any any 0.0.0.0/0 any 198.51.100.7 in\n\
             ### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### reject tcp 3306 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### allow_log tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n";
        let plan = Firewall::new(&want, vec![]).plan(&observed(parse_rules(existing, false)));
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(changes, vec!["ufw delete allow log proto tcp from any to any port 80"]);
        assert_eq!(plan.warnings.iter().filter(|w| w.contains("never deletes a rule that blocks")).count(), 3);
    }

    #[test]
    fn a_limited_rule_covers_ssh_only_for_the_operator() {
        let mut o = observed(vec![]);
        o.enabled = false;
        let limited = "[firewall]\n[[firewall.rule]]\naction = \"limit\"\nport = 22\nfrom = \"10.9.0.0/16\"\n";
        // No session and no admin network: a CIDR-limited rule does not prove the operator gets in.
        let plan = Firewall::new(&profile(limited), vec![]).plan(&o);
        assert!(plan.findings.iter().any(|f| f.id == "firewall.ssh-guard"), "refused");
        let admin = limited.replace("[firewall]\n", "[firewall]\nadmin = [\"10.9.8.0/24\"]\n");
        let plan = Firewall::new(&profile(&admin), vec![]).plan(&o);
        assert!(!plan.findings.iter().any(|f| f.id == "firewall.ssh-guard"), "the admin network is inside the rule");
        // A deny rule never counts as access.
        let deny = "[firewall]\n[[firewall.rule]]\naction = \"deny\"\nport = 22\n";
        assert!(Firewall::new(&profile(deny), vec![]).plan(&o).findings.iter().any(|f| f.id == "firewall.ssh-guard"));
    }

    #[test]
    fn guard_refuses_when_ssh_port_is_not_allowed() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 80\n");
        let mut o = observed(vec![]);
        o.enabled = false;
        o.ssh.ports = [2222].into();
        let plan = Firewall::new(&want, vec![]).plan(&o);
        assert!(plan.actions.is_empty(), "nothing may run");
        let guard = plan.findings.iter().find(|f| f.id == "firewall.ssh-guard").expect("guard finding");
        assert!(guard.title.contains("2222/tcp") && guard.title.contains("port = 2222"), "{}", guard.title);
    }

    const GOVERNED: &str = "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 22\n\
        [[firewall.allow]]\nport = 8080\ntarget = \"containers\"\n";

    fn with_after(mut o: Observed, text: &str) -> Observed {
        o.after = vec![(false, PathBuf::from("/etc/ufw/after.rules"), text.to_string())];
        o
    }

    fn live(nf: Netfilter) -> Option<Result<Vec<(bool, Netfilter)>, String>> {
        Some(Ok(vec![(false, nf)]))
    }

    #[test]
    fn the_block_is_written_then_loaded_with_one_reload() {
        let want = profile(GOVERNED);
        let fw = Firewall::new(&want, vec![]);
        let mut o = with_after(observed(parse_rules(USER_RULES, false)), "*filter\nCOMMIT\n");
        o.netfilter = live(Netfilter { ufw_loaded: true, docker_user: Some(vec![]), docker_user_hooked: true });
        let plan = fw.plan(&o);
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(
            changes,
            vec!["write vakt's block in /etc/ufw/after.rules (previous kept as after.rules.vakt-prev)", "ufw reload"]
        );
        let writes = plan.actions.iter().filter(|a| matches!(a, Action::Write(..))).count();
        let reloads =
            plan.actions.iter().filter(|a| matches!(a, Action::Run(v) if v.join(" ") == "ufw reload")).count();
        assert_eq!((writes, reloads), (1, 1), "{:?}", plan.actions);
        assert!(!plan.warnings.iter().any(|w| w.contains("bypass ufw")));

        // Converged: the file holds the block and the kernel its rules.
        let Some(Action::Write(_, text)) = plan.actions.iter().find(|a| matches!(a, Action::Write(..))) else {
            panic!("no write")
        };
        let mut o = with_after(o.clone(), text);
        let mut rules = published::chain_rules(&want, false);
        rules.push("-A DOCKER-USER -j RETURN".into());
        o.netfilter = live(Netfilter { ufw_loaded: true, docker_user: Some(rules), docker_user_hooked: true });
        let plan = fw.plan(&o);
        assert!(plan.actions.is_empty(), "{:?}", plan.findings);

        // Docker flushed nothing, but someone did: the live rules are gone, a reload restores them.
        o.netfilter = live(Netfilter { ufw_loaded: true, docker_user: Some(vec![]), docker_user_hooked: true });
        let plan = fw.plan(&o);
        let live = plan.findings.iter().find(|f| f.id == "firewall.published-ports.live").expect("live finding");
        assert_eq!((live.status, live.change.as_deref()), (Status::Drift, Some("ufw reload")));
    }

    #[test]
    fn enabled_in_the_file_but_not_loaded_is_drift() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n");
        let mut o = with_after(observed(parse_rules(USER_RULES, false)), "");
        o.netfilter = live(Netfilter::default());
        let plan = Firewall::new(&want, vec![]).plan(&o);
        let loaded = plan.findings.iter().find(|f| f.id == "firewall.loaded").expect("loaded finding");
        assert_eq!((loaded.status, loaded.change.as_deref()), (Status::Drift, Some("ufw reload")));
        // Could not read netfilter: unknown, never compliant.
        o.netfilter = Some(Err("permission denied".into()));
        let plan = Firewall::new(&want, vec![]).plan(&o);
        assert!(plan.findings.iter().any(|f| f.id == "firewall.live" && f.status == Status::Unknown));
    }

    #[test]
    fn removing_the_setting_removes_the_block_and_the_live_rules() {
        let on = profile(GOVERNED);
        let block = published::block(&on, false);
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n");
        let mut o = with_after(observed(parse_rules(USER_RULES, false)), &format!("*filter\nCOMMIT\n\n{block}"));
        o.docker_present = true;
        o.netfilter = live(Netfilter {
            ufw_loaded: true,
            docker_user: Some(published::chain_rules(&on, false)),
            docker_user_hooked: true,
        });
        let plan = Firewall::new(&want, vec![]).plan(&o);
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                "remove vakt's block in /etc/ufw/after.rules (previous kept as after.rules.vakt-prev)",
                "iptables -F DOCKER-USER; iptables -A DOCKER-USER -j RETURN",
            ]
        );
        assert!(matches!(&plan.actions[0], Action::Write(_, text) if text == "*filter\nCOMMIT\n"));
        assert!(plan.warnings.iter().any(|w| w.contains("bypass ufw")), "Docker decides again: warn");
    }

    #[test]
    fn sensitive_ports_open_to_the_world_warn() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\n");
        let plan = Firewall::new(&want, vec![(2377, "swarm management".into())]).plan(&observed(vec![]));
        assert!(
            plan.warnings.iter().any(|w| w.contains("2377 (swarm management) is open to the world")),
            "{:?}",
            plan.warnings
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A model of what the ufw commands vakt plans do to ufw's state.
    fn run_model(o: &mut Observed, argv: &[String]) {
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        match words.get(1).copied() {
            Some(action @ ("allow" | "limit" | "deny" | "reject")) => {
                let proto = after("proto").unwrap_or("any");
                let src = after("from").unwrap_or("any");
                let port = after("port").unwrap_or("any");
                let fams: Vec<bool> = match src {
                    "any" => {
                        if o.ipv6 {
                            vec![false, true]
                        } else {
                            vec![false]
                        }
                    }
                    s => vec![s.contains(':')],
                };
                for v6 in fams {
                    let t = Tuple {
                        action: action.into(),
                        log: String::new(),
                        proto: proto.into(),
                        dport: port.into(),
                        dst: any_net(v6).into(),
                        sport: "any".into(),
                        src: if src == "any" { any_net(v6).into() } else { src.into() },
                        direction: "in".into(),
                        v6,
                        foreign: false,
                    };
                    if !o.rules.contains(&t) {
                        o.rules.push(t);
                    }
                }
            }
            Some("delete") => {
                let action = words[2];
                let log = match words[3] {
                    "log" | "log-all" => words[3],
                    _ => "",
                };
                let proto = after("proto").unwrap_or("any");
                let from_at = words.iter().position(|w| *w == "from").unwrap_or(0);
                let to_at = words.iter().position(|w| *w == "to").unwrap_or(0);
                let src = words[from_at + 1];
                let dst = words[to_at + 1];
                let sport = if words.get(from_at + 2) == Some(&"port") { words[from_at + 3] } else { "any" };
                let dport = if words.get(to_at + 2) == Some(&"port") { words[to_at + 3] } else { "any" };
                o.rules.retain(|t| {
                    let net = |w: &str| if w == "any" { any_net(t.v6).to_string() } else { w.to_string() };
                    !(t.action == action
                        && t.log == log
                        && t.proto == proto
                        && t.src == net(src)
                        && t.dst == net(dst)
                        && t.sport == sport
                        && t.dport == dport
                        && !t.foreign)
                });
            }
            Some("default") => {
                let p = Policy::parse(words[2]);
                match words[3] {
                    "incoming" => o.incoming = p,
                    "outgoing" => o.outgoing = p,
                    _ => o.routed = p,
                }
            }
            Some("--force") => o.enabled = true,
            Some("disable") => o.enabled = false,
            _ => panic!("unmodelled command {argv:?}"),
        }
    }

    fn rule() -> impl Strategy<Value = (u16, u8, u8, &'static str)> {
        (
            prop::sample::select(vec![80u16, 443, 2377, 8080]),
            0u8..3,
            0u8..3,
            prop::sample::select(vec!["allow", "limit", "deny", "reject"]),
        )
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        (
            prop::sample::select(vec!["22", "80", "443", "5432"]),
            prop::sample::select(vec!["tcp", "udp", "any"]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            (
                prop::sample::select(vec!["allow", "limit", "deny", "reject"]),
                prop::sample::select(vec!["", "log", "log-all"]),
            ),
        )
            .prop_map(|(port, proto, v6, limited, foreign, (action, log))| Tuple {
                action: action.into(),
                log: log.into(),
                proto: proto.into(),
                dport: port.into(),
                dst: any_net(v6).into(),
                sport: "any".into(),
                src: if limited {
                    (if v6 { "2001:db8::/32" } else { "10.0.0.0/8" }).into()
                } else {
                    any_net(v6).into()
                },
                direction: "in".into(),
                v6,
                foreign,
            })
    }

    fn policy() -> impl Strategy<Value = Option<Policy>> {
        prop::sample::select(vec![Some(Policy::Allow), Some(Policy::Deny), Some(Policy::Reject), None])
    }

    proptest! {
        #[test]
        fn applying_the_plan_from_any_state_reaches_the_profile(
            rules in prop::collection::vec(rule(), 0..5),
            existing in prop::collection::vec(tuple(), 0..8),
            prune in any::<bool>(), enabled in any::<bool>(), ipv6 in any::<bool>(),
            incoming in policy(), outgoing in policy(), routed in policy(),
        ) {
            let mut text = format!("[firewall]\nprune = {prune}\n[[firewall.allow]]\nport = 22\n");
            // A profile lists each rule once (duplicates are a profile error).
            let rules: std::collections::BTreeSet<_> = rules.into_iter().collect();
            // One action per traffic (two are a profile error).
            let mut seen = std::collections::BTreeSet::new();
            for (port, proto, from, action) in rules {
                let proto = if action == "limit" { "tcp" } else { ["tcp", "udp", "both"][proto as usize] };
                let from = ["any", "10.0.0.0/8", "2001:db8::/32"][from as usize];
                if seen.insert((port, proto, from)) {
                    text.push_str(&format!("[[firewall.rule]]\naction = \"{action}\"\nport = {port}\nproto = \"{proto}\"\nfrom = \"{from}\"\n"));
                }
            }
            let want = crate::profile::parse("t", &text).expect("valid").firewall.expect("firewall");
            let fw = Firewall::new(&want, vec![]);
            let existing: Vec<Tuple> = existing.into_iter().filter(|t| ipv6 || !t.v6).collect();
            let existing_blocking: Vec<Tuple> = existing.iter().filter(|t| t.action != "allow").cloned().collect();
            let mut state = Observed {
                enabled, ipv6, incoming, outgoing, routed,
                rules: existing,
                ssh: SshFacts { ports: [22].into(), client: None, evidence: vec![] },
                docker_present: false,
                offline: None,
                after: vec![],
                netfilter: None,
            };
            let plan = fw.plan(&state);
            for action in plan.actions {
                if let Action::Run(argv) = action {
                    run_model(&mut state, &argv);
                }
            }
            let again = fw.plan(&state);
            prop_assert!(again.actions.is_empty(), "still planned: {:?}", again.findings.iter().filter_map(|f| f.change.clone()).collect::<Vec<_>>());
            if prune {
                prop_assert!(state.rules.iter().all(|t| t.foreign || t.action != "allow" || want.rules.iter().any(|r| t.matches(r))), "extras left: {:?}", state.rules);
            }
            // A rule that blocks is never deleted unless the profile asks for the same.
            for t in existing_blocking.iter() {
                prop_assert!(state.rules.contains(t), "deleted a blocking rule it does not own: {t:?}");
            }
        }
    }
}
