//! The `firewall` resource: ufw's state observed from its own files (and, on a live host,
//! from netfilter), converged through the `ufw` command (a fresh, disabled ufw gets its rule
//! files in one write each, exactly as ufw writes them: rules_file.rs), with the SSH lockout
//! guard and the block that makes Docker-published ports obey the profile.

pub mod model;
pub(crate) mod published;
pub mod rules_file;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

use super::ssh::{self, SshFacts};
use super::{Finding, Plan, Resource, Status};
use crate::host::{Host, Shared, Touches};
use crate::profile::{Action as RuleAction, Firewall as Wanted, Policy, Proto, Published, Rule};
use model::{By, Packet, UfwRule, Unreadable};
use published::Netfilter;
use rules_file::LogLevel;

const UFW_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Observed {
    pub enabled: bool,
    pub ipv6: bool,
    pub incoming: Option<Policy>,
    pub outgoing: Option<Policy>,
    pub routed: Option<Policy>,
    /// ufw.conf's `LOGLEVEL`, when it is one ufw knows.
    pub loglevel: Option<LogLevel>,
    /// ufw's rules: `user.rules` in file order, then `user6.rules` (when IPv6 is on).
    pub rules: Vec<UfwRule>,
    /// Where `user.rules` and `user6.rules` are (under the image root offline).
    pub rule_files: [PathBuf; 2],
    /// Whether vakt may write ufw's rule files itself: `ufw` is on PATH (it loads them, or
    /// edits them offline), and the kernel has IPv6 when ufw's does (ufw skips IPv6 without it).
    pub may_write_rules: bool,
    /// Tuples vakt could not read: never touched, reported.
    pub unreadable: Vec<Unreadable>,
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
    /// Replace one of ufw's rule files atomically, as ufw does (no copy kept).
    Rules(PathBuf, String),
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

/// Both families' rules as typed values, with the tuples vakt could not read.
pub fn parse_rules(v4: &str, v6: Option<&str>) -> (Vec<UfwRule>, Vec<Unreadable>) {
    let (mut rules, mut unreadable) = model::parse_rules(v4, false);
    if let Some(text) = v6 {
        let (r, u) = model::parse_rules(text, true);
        rules.extend(r);
        unreadable.extend(u);
    }
    (rules, unreadable)
}

/// `KEY=value` (quotes stripped) from ufw.conf or /etc/default/ufw.
/// ufw's own state on disk, as both the firewall and the exposure audit read it: whether it
/// is enabled, whether it manages IPv6, its default policies and its rules.
#[derive(Debug)]
pub(crate) struct UfwFiles {
    pub enabled: bool,
    pub ipv6: bool,
    pub incoming: Option<Policy>,
    pub outgoing: Option<Policy>,
    pub routed: Option<Policy>,
    pub loglevel: Option<LogLevel>,
    pub rules: Vec<UfwRule>,
    pub unreadable: Vec<Unreadable>,
}

impl UfwFiles {
    /// Whether ufw is set up (its ufw.conf is there): without it, [`UfwFiles::read`] fails.
    pub fn present(host: &Host) -> bool {
        host.path("/etc/ufw/ufw.conf").exists()
    }

    pub fn read(host: &Host) -> anyhow::Result<UfwFiles> {
        let conf = host
            .read("/etc/ufw/ufw.conf")
            .context("ufw is not installed or not set up; add `ufw` to [packages] install")?;
        let defaults = host.read("/etc/default/ufw")?;
        let ipv6 = manages_ipv6(&defaults);
        let v6_rules = if ipv6 { Some(host.read_opt("/etc/ufw/user6.rules").unwrap_or_default()) } else { None };
        let (rules, unreadable) = parse_rules(&host.read("/etc/ufw/user.rules")?, v6_rules.as_deref());
        let policy = |key| setting(&defaults, key).and_then(|v| Policy::from_ufw(&v.to_ascii_lowercase()));
        Ok(UfwFiles {
            enabled: setting(&conf, "ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            ipv6,
            incoming: policy("DEFAULT_INPUT_POLICY"),
            outgoing: policy("DEFAULT_OUTPUT_POLICY"),
            routed: policy("DEFAULT_FORWARD_POLICY"),
            loglevel: setting(&conf, "LOGLEVEL").and_then(|l| LogLevel::parse(&l.to_ascii_lowercase())),
            rules,
            unreadable,
        })
    }
}

/// Whether /etc/default/ufw (`defaults`) has ufw manage IPv6; ufw lowercases its settings
/// (`IPV6=YES` is yes) and manages it unless told not to.
fn manages_ipv6(defaults: &str) -> bool {
    setting(defaults, "IPV6").is_none_or(|v| v.eq_ignore_ascii_case("yes"))
}

pub(crate) fn setting(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// One family's rules, in ufw's order.
fn family_rules(rules: &[UfwRule], v6: bool) -> Vec<UfwRule> {
    rules.iter().filter(|r| r.v6 == v6).cloned().collect()
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

/// The ufw argv that adds a rule at the end of both families' lists (`ufw allow ...`,
/// `ufw limit ...`, `ufw deny ...`).
pub fn allow_command(rule: &Rule) -> Vec<String> {
    add_command(rule, None)
}

/// The argv that adds `rule`: to both families (`from any`), or to one family (`from
/// 0.0.0.0/0`, which ufw stores exactly as it stores `from any`), there at a 1-based position
/// of `ufw status numbered` (IPv4 rules first, then IPv6) with `ufw insert N`.
fn add_command(rule: &Rule, at: Option<(bool, Option<usize>)>) -> Vec<String> {
    let mut argv = vec!["ufw".to_string()];
    if let Some((_, Some(n))) = at {
        argv.extend(["insert".into(), n.to_string()]);
    }
    argv.push(rule.action.as_str().into());
    if rule.proto != Proto::Both {
        argv.extend(["proto".into(), rule.proto.as_str().into()]);
    }
    let from = match (rule.from, at) {
        (Some(n), _) => model::host_or_net(n),
        (None, Some((v6, _))) => model::any_net(v6).to_string(),
        (None, None) => "any".into(),
    };
    argv.extend(["from".into(), from]);
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
    argv.iter().map(|a| crate::escape::sh_word(a)).collect::<Vec<_>>().join(" ")
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
    /// Who must keep SSH access, with what it is for the message: this session's client, every
    /// `[firewall] admin` network, and without admin networks, anywhere in each family the
    /// session does not come from. IPv6 is left out when ufw does not filter it.
    fn protected(&self, o: &Observed) -> Vec<(IpNet, String)> {
        let mut out: Vec<(IpNet, String)> = Vec::new();
        // ufw accepts loopback before any rule: a session from the machine itself is never cut.
        if let Some(c) = o.ssh.client.filter(|c| !c.is_loopback()) {
            out.push((IpNet::from(c), format!("this session's client {c}")));
        }
        out.extend(self.want.admin.iter().map(|a| (*a, format!("admin network {a}"))));
        if self.want.admin.is_empty() {
            for v6 in [false, true] {
                if o.ssh.client.is_none_or(|c| c.is_ipv6() != v6) {
                    out.push((model::any_net(v6), "anywhere".into()));
                }
            }
        }
        out.retain(|(n, _)| o.ipv6 || n.addr().is_ipv4());
        out
    }

    /// Refuses a firewall whose rules (`lists`, one per family, in ufw's order after the plan)
    /// would block SSH for anyone who must keep it: the title says what to change, the
    /// evidence which address is blocked by which rule.
    fn lockout(&self, o: &Observed, lists: &[Vec<UfwRule>; 2]) -> Option<Finding> {
        let policy = self.want.incoming;
        let mut blocked: Vec<(u16, bool, Option<String>, String)> = Vec::new();
        for (net, who) in self.protected(o) {
            let v6 = net.addr().is_ipv6();
            let rules = &lists[usize::from(v6)];
            for &port in &o.ssh.ports {
                let packet = |src| Packet { src, dst: None, dport: port, proto: Proto::Tcp };
                // Not knowing the operator's address ("anywhere"), an address a rule for a
                // narrower network blocks (a fail2ban ban, a blocked range) is taken not to be
                // theirs; the world's verdict is what counts.
                let banned = |v: &model::Verdict| {
                    let narrow = |i: &usize| !model::is_world(rules[*i].src);
                    net.prefix_len() == 0
                        && match v.by {
                            By::Rule(i) if !v.admits => narrow(&i),
                            _ => v.admits && v.unsure.iter().all(narrow),
                        }
                };
                let first_blocked = model::witnesses(rules, net)
                    .into_iter()
                    .map(|src| (src, model::evaluate(rules, policy, &packet(src))))
                    .find(|(_, v)| (!v.admits || !v.unsure.is_empty()) && !banned(v));
                if let Some((src, v)) = first_blocked {
                    let rule = match (v.admits, v.by) {
                        (true, _) => v.unsure.first().map(|i| rules[*i].describe()),
                        (false, By::Rule(i)) => Some(rules[i].describe()),
                        (false, By::Policy) => None,
                    };
                    let by = match (&rule, v.admits) {
                        (Some(r), true) => format!(
                            "ufw rule `{r}` may match first (it names an interface, an address or a source port)"
                        ),
                        (Some(r), false) => format!("ufw rule `{r}`, which comes first"),
                        (None, _) => format!("the incoming policy ({})", policy.as_str()),
                    };
                    blocked.push((port, v6, rule, format!("{port}/tcp from {src} ({who}) is blocked by {by}")));
                }
            }
        }
        let (port, _, _, _) = blocked.first()?;
        let mut places: Vec<String> =
            blocked.iter().map(|(p, v6, _, _)| format!("{p}/tcp ({})", family(*v6))).collect();
        places.dedup();
        let mut rules: Vec<&str> = blocked.iter().filter_map(|(_, _, r, _)| r.as_deref()).collect();
        rules.dedup();
        let fix = if rules.is_empty() {
            format!(
                "add to the profile:\n  [[firewall.allow]]\n  port = {port}\n  proto = \"tcp\"\n  comment = \"ssh\""
            )
        } else {
            format!(
                "the first matching rule decides (ufw's order, which is the profile's order): list an allow for port {port} before `{}`, narrow that rule, or delete it",
                rules.join("`, `")
            )
        };
        let title = format!(
            "refusing to change the firewall: with incoming {} SSH would be blocked on {}; {fix}",
            policy.as_str(),
            places.join(", ")
        );
        let mut f = Finding::new("firewall.ssh-guard", title, Status::Failed);
        f.evidence = blocked.into_iter().map(|(_, _, _, e)| e).collect();
        f.evidence.extend(o.ssh.evidence.iter().cloned());
        Some(f)
    }
}

/// Where a missing rule goes in one family's list.
#[derive(Debug, Clone, Copy)]
enum Place {
    Append,
    /// ufw replaces the rule for the same traffic at this index ("Rule updated").
    Replace(usize),
    /// Before the rule at this index.
    Insert(usize),
}

/// A command a finding names, and what apply does with it: run it now, or (an image
/// prepared offline) leave it to the first boot, decided where the command is made.
#[derive(Debug)]
struct Command {
    text: String,
    now: Option<Action>,
}

type Run<'a> = dyn Fn(Vec<String>) -> Command + 'a;

/// `finding`, a drift fixed by `commands`: their actions join the plan (one already planned,
/// such as a shared `ufw reload` or a `ufw delete` that covers both families, is not repeated);
/// when every command waits for the first boot, the finding says so instead.
fn fix_by(plan: &mut Plan<Action>, finding: Finding, commands: Vec<Command>) {
    let text = commands.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join("; ");
    if commands.iter().all(|c| c.now.is_none()) {
        let mut deferred = Finding::deferred(finding.id, finding.title, text);
        deferred.evidence.splice(0..0, finding.evidence);
        plan.pass(deferred);
        return;
    }
    plan.pass(Finding { change: Some(text), ..finding });
    for action in commands.into_iter().filter_map(|c| c.now) {
        if !plan.actions.contains(&action) {
            plan.actions.push(action);
        }
    }
}

impl Firewall<'_> {
    /// The profile's host rules in ufw, in the profile's order: a missing rule goes right
    /// before the first rule in ufw that the profile lists after it (`ufw insert N`) when a rule
    /// from there on would decide part of its traffic the other way, else at the end. Returns each family's rules as they will stand (IPv4, IPv6).
    fn plan_rules(&self, o: &Observed, plan: &mut Plan<Action>, run: &Run) -> [Vec<UfwRule>; 2] {
        let profile: Vec<&Rule> = self.want.host_rules().collect();
        let mut lists = [family_rules(&o.rules, false), family_rules(&o.rules, true)];
        let owner = |t: &UfwRule| profile.iter().position(|r| t.is(r));
        for (i, rule) in profile.iter().enumerate() {
            let missing: Vec<bool> = families(rule, o.ipv6)
                .into_iter()
                .filter(|v6| !lists[usize::from(*v6)].iter().any(|t| t.is(rule)))
                .collect();
            // An operator's rule that blocks the same traffic (a limit on 22, a deny) would be
            // replaced by the add, silently: refuse, and say how to keep or drop it.
            let replaced = missing.iter().find_map(|v6| {
                lists[usize::from(*v6)]
                    .iter()
                    .find(|t| t.same_traffic(rule) && t.action != RuleAction::Allow && t.action != rule.action)
            });
            if missing.is_empty() {
                plan.pass(Finding::ok(rule_id(rule), rule_title(rule)));
                continue;
            }
            if let Some(t) = replaced {
                let title = format!("{}: ufw would replace an existing {} rule", rule_title(rule), t.action.as_str());
                plan.pass(
                    Finding::new(rule_id(rule), title, Status::Failed)
                        .with_evidence(format!("ufw holds: {}", t.describe()))
                        .with_evidence(format!(
                            "keep it: list it in the profile as [[firewall.rule]] with action = \"{}\"; or delete it yourself if the profile's {} should win",
                            t.action.as_str(),
                            rule.action.as_str()
                        )),
                );
                continue;
            }
            // Per family: ufw replaces a rule for the same traffic in place (an allow the profile
            // now limits), else the rule goes before the first rule the profile lists after it,
            // and never before one it lists earlier that meets its traffic otherwise. ufw numbers an application profile's rule
            // once however many tuples it has, and counts tuples vakt cannot read: with either
            // in the list, a position vakt computes could be off, so the rule is appended.
            let place: Vec<(bool, Place)> = missing
                .iter()
                .map(|&v6| {
                    let list = &lists[usize::from(v6)];
                    let numbered = list.iter().all(|t| t.app.is_none()) && !o.unreadable.iter().any(|u| u.v6 == v6);
                    // Only a rule that meets its traffic with another action orders against
                    // it: after each such rule the profile lists earlier, and before the first
                    // rule it lists later when such a rule sits from there on (or the profile
                    // lists one later: its place then must stay). Otherwise appended, it
                    // judges every packet as in place.
                    let new = model::from_profile(rule, v6);
                    let conflicts = |t: &UfwRule| t.action != rule.action && overlaps(t, &new);
                    let lo =
                        list.iter().rposition(|t| owner(t).is_some_and(|j| j < i) && conflicts(t)).map_or(0, |p| p + 1);
                    let later = profile[i + 1..]
                        .iter()
                        .any(|r| families(r, o.ipv6).contains(&v6) && conflicts(&model::from_profile(r, v6)));
                    let place = match list.iter().position(|t| t.same_traffic(rule)) {
                        Some(p) => Place::Replace(p),
                        None => (lo..list.len())
                            .find(|&k| owner(&list[k]).is_some_and(|j| j > i))
                            .filter(|&k| later || list[k..].iter().any(conflicts))
                            .filter(|_| numbered)
                            .map_or(Place::Append, Place::Insert),
                    };
                    (v6, place)
                })
                .collect();
            let inserts = place.iter().any(|(_, p)| matches!(p, Place::Insert(_)));
            // One command for every family only when each lacks the rule: ufw would otherwise
            // rewrite the family that has it (dropping its log setting).
            let per_family = inserts || missing.len() < families(rule, o.ipv6).len();
            let mut argvs = Vec::new();
            if !per_family {
                argvs.push(allow_command(rule));
            }
            for &(v6, p) in &place {
                let fam = usize::from(v6);
                let new = model::from_profile(rule, v6);
                match p {
                    Place::Insert(k) => {
                        let before_v6 = if v6 { lists[0].len() } else { 0 };
                        argvs.push(add_command(rule, Some((v6, Some(before_v6 + k + 1)))));
                        lists[fam].insert(k, new);
                    }
                    Place::Replace(k) => {
                        if per_family {
                            argvs.push(add_command(rule, Some((v6, None))));
                        }
                        lists[fam][k] = new;
                    }
                    Place::Append => {
                        if per_family {
                            argvs.push(add_command(rule, Some((v6, None))));
                        }
                        lists[fam].push(new);
                    }
                }
            }
            let commands: Vec<Command> = argvs.into_iter().map(run).collect();
            let fams: Vec<&str> = missing.iter().map(|v6| family(*v6)).collect();
            let mut f = Finding::new(rule_id(rule), rule_title(rule), Status::Drift)
                .with_evidence(format!("missing for {}", fams.join(" and ")));
            if inserts {
                f.evidence.push("inserted before the rules the profile lists after it: the first match decides".into());
            }
            fix_by(plan, f, commands);
        }
        self.check_order(&profile, &lists, o.ipv6, plan);
        lists
    }

    /// Two of the profile's rules already in ufw in the other order, where it matters (their
    /// traffic overlaps and one admits what the other blocks): refused with the reorder needed.
    fn check_order(&self, profile: &[&Rule], lists: &[Vec<UfwRule>; 2], o_ipv6: bool, plan: &mut Plan<Action>) {
        for list in lists {
            let placed: Vec<(usize, usize)> = list
                .iter()
                .enumerate()
                .filter_map(|(pos, t)| profile.iter().position(|r| t.is(r)).map(|i| (pos, i)))
                .collect();
            for (n, &(pos_a, a)) in placed.iter().enumerate() {
                let Some(&(_, b)) = placed[n + 1..].iter().find(|&&(_, b)| {
                    b < a
                        && overlaps(&list[pos_a], &model::from_profile(profile[b], list[pos_a].v6))
                        && profile[a].action.admits() != profile[b].action.admits()
                }) else {
                    continue;
                };
                let (early, late) = (profile[b], profile[a]);
                let id = format!("firewall.order.{}", rule_id(early).trim_start_matches("firewall.rule."));
                if plan.findings.iter().any(|f| f.id == id) {
                    continue;
                }
                let delete = list[pos_a].delete_command(!o_ipv6).map(|a| shell_words(&a)).unwrap_or_default();
                plan.pass(
                    Finding::new(
                        id,
                        format!(
                            "{} comes after {} in ufw; the profile lists it first",
                            rule_title(early),
                            rule_title(late)
                        ),
                        Status::Failed,
                    )
                    .with_evidence(format!(
                        "ufw holds ({pos}): {}",
                        list[pos_a].describe(),
                        pos = family(list[pos_a].v6)
                    ))
                    .with_evidence(format!(
                        "the first match decides: run `{delete}`, then vakt apply re-adds it in the profile's order"
                    )),
                );
            }
        }
    }

    /// Rules in ufw the profile does not list: allow rules are deleted with `prune = true`;
    /// rules that block and rules vakt does not write are never touched.
    fn plan_prune(&self, o: &Observed, plan: &mut Plan<Action>, run: &Run, lists: &mut [Vec<UfwRule>; 2]) {
        let want = self.want;
        let wanted = |t: &UfwRule| want.host_rules().any(|r| t.is(r) && families(r, o.ipv6).contains(&t.v6));
        // An allow the profile now limits, denies or rejects is replaced in place by the add.
        let replaced = |t: &UfwRule| {
            t.action == RuleAction::Allow
                && want.host_rules().any(|r| t.same_traffic(r) && families(r, o.ipv6).contains(&t.v6))
        };
        let extras: Vec<&UfwRule> = o.rules.iter().filter(|t| !wanted(t) && !replaced(t)).collect();
        for extra in &extras {
            let id = format!("firewall.extra.{}", extra.describe().replace(' ', "_"));
            // The same rule extra in the other family too: one `ufw delete ... from any` takes
            // both; otherwise the delete names this family only, or it would take a wanted twin.
            let twin = |t: &&UfwRule| {
                t.v6 != extra.v6
                    && (t.action, t.log, t.proto, &t.dports, &t.sports, &t.scope)
                        == (extra.action, extra.log, extra.proto, &extra.dports, &extra.sports, &extra.scope)
                    && [t.src, t.dst, extra.src, extra.dst].iter().all(|n| n.prefix_len() == 0)
            };
            // With IPv6 off in ufw, `from any` is the IPv4 rule alone.
            let both = !o.ipv6 || extras.iter().any(twin);
            match extra.delete_command(both) {
                // vakt owns allow rules only: pruning one can only close the firewall. A deny,
                // limit or reject rule it did not list (fail2ban's bans, an operator's block)
                // is never deleted.
                Some(_) if extra.action != RuleAction::Allow => plan.warn(format!(
                    "{} rule not in the profile, kept (vakt never deletes a rule that blocks): {}",
                    extra.action.as_str(),
                    extra.describe()
                )),
                Some(argv) if want.prune => {
                    lists[usize::from(extra.v6)].retain(|t| t != *extra);
                    // `ufw delete ... from any` removes both families at once: plan it once.
                    let f = Finding::new(id, format!("extra rule {}", extra.describe()), Status::Drift);
                    fix_by(plan, f, vec![run(argv)]);
                }
                Some(_) => plan
                    .warn(format!("extra rule not in the profile, left alone (prune = false): {}", extra.describe())),
                None => plan.warn(format!("rule vakt does not manage, left alone: {}", extra.describe())),
            }
        }
        for u in &o.unreadable {
            plan.warn(format!(
                "a rule in {} vakt cannot read, left alone (its place in the order is not judged): {}",
                if u.v6 { "user6.rules" } else { "user.rules" },
                u.text
            ));
        }
    }

    /// What the rules say to the world: sensitive ports open to it (under any of its names),
    /// rules shadowed by an earlier one, rules a disabled IPv6 cannot carry.
    fn lint_rules(&self, o: &Observed, plan: &mut Plan<Action>, lists: &[Vec<UfwRule>; 2]) {
        let want = self.want;
        for rule in &want.rules {
            let world = rule.from.is_none_or(model::is_world);
            if world && rule.action.admits() {
                for (port, why) in &self.sensitive {
                    if rule.covers(*port, Proto::Tcp) {
                        let name = rule.from.map(|n| format!(" (from {n} is the world)")).unwrap_or_default();
                        plan.warn(format!(
                            "port {port} ({why}) is open to the world{name}; limit it with `from = \"CIDR\"`"
                        ));
                    }
                }
            }
            if rule.from.is_some_and(|n| n.addr().is_ipv6()) && !o.ipv6 {
                plan.warn(format!("{}: IPv6 is disabled in /etc/default/ufw, the rule cannot apply", rule_id(rule)));
            }
        }
        for list in lists {
            for (pos, later) in list.iter().enumerate() {
                let Some(rule) = want.host_rules().find(|r| later.is(r)) else { continue };
                if let Some(early) = list[..pos].iter().find(|e| {
                    // A broader rule (its sources hold all of this one's): not a fail2ban ban of one host.
                    e.action.admits() != later.action.admits()
                        && e.src.contains(&later.src)
                        && overlaps(e, later)
                        && !want.host_rules().any(|r| e.is(r))
                }) {
                    plan.warn(format!(
                        "{}: ufw rule `{}` comes first and decides part of its traffic the other way ({})",
                        rule_id(rule),
                        early.describe(),
                        family(later.v6)
                    ));
                }
            }
        }
    }
}

/// Whether some packet matches both rules (same family; ports, protocol and sources meet).
fn overlaps(a: &UfwRule, b: &UfwRule) -> bool {
    let ports = |p: &model::Ports| match p {
        model::Ports::Any => vec![(1u16, u16::MAX)],
        model::Ports::List(l) => l.clone(),
    };
    let ports_meet =
        ports(&a.dports).iter().any(|(a0, a1)| ports(&b.dports).iter().any(|(b0, b1)| a0 <= b1 && b0 <= a1));
    let proto_meet = a.proto == Proto::Both || b.proto == Proto::Both || a.proto == b.proto;
    let nets_meet = a.src.contains(&b.src) || b.src.contains(&a.src);
    let judges_input =
        |r: &UfwRule| r.other_proto.is_none() && matches!(r.scope, model::Scope::Input | model::Scope::Interface(_));
    a.v6 == b.v6 && judges_input(a) && judges_input(b) && ports_meet && proto_meet && nets_meet
}

/// The live filter tables, v4 then v6: read-only (`iptables-save` lists, it changes nothing).
/// Both families at once: each `*-save` is a process of its own, and nothing orders them.
fn read_netfilter(host: &Host, ipv6: bool) -> Result<Vec<(bool, Netfilter)>, String> {
    let read = |v6: bool| {
        host.netfilter_save(v6)
            .map(|save| (v6, published::parse_save(&save, v6)))
            .map_err(|e| format!("could not read the live firewall: {e}"))
    };
    std::thread::scope(|s| {
        let v6 = ipv6.then(|| s.spawn(|| read(true)));
        let mut out = vec![read(false)?];
        if let Some(v6) = v6 {
            out.push(v6.join().map_err(|_| "reading the IPv6 table panicked".to_string())??);
        }
        Ok(out)
    })
}

/// Whether converging this firewall may run while Docker restarts and end as if it ran
/// first. ufw (with `MANAGE_BUILTINS=no`) appends its jumps to the built-in filter chains and
/// otherwise keeps to its own chains; the engine inserts its filter jumps at the top and keeps
/// to its own chains; so the two commute, unless anything of ufw's reaches what the engine
/// writes, or they cannot both write at once. Docker then waits where:
/// - ufw manages the built-in chains (it flushes them, the engine's rules and chains with them);
/// - a ufw rules file names a Docker chain (vakt's published-ports block, an operator's
///   DOCKER-USER rules: ufw's load flushes the chain the engine fills, and its rules must be in
///   place before any container's port opens) or has a `*nat` section (the engine appends its
///   nat jumps, so the order would depend on who came first);
/// - ufw's `before.init` or `after.init` hook is executable (ufw runs it; it may do anything);
/// - ufw's IPv6 is off (ufw then restores the whole IPv6 filter table);
/// - the live DOCKER-USER holds vakt's rules of a block since removed (the firewall flushes it);
/// - the profile governs published ports (that block is about to be written);
/// - iptables is the legacy backend: ufw does not wait for the xtables lock the engine holds,
///   and fails where they meet (nf_tables commits each change as a transaction);
/// - or anything of that cannot be read, or this is an image prepared offline.
pub fn commutes_with_engine(want: &Wanted, host: &Host) -> bool {
    if !host.is_live() {
        return false;
    }
    let read = |p: &str| crate::fsutil::read_text(host.path(p)).ok();
    // ufw runs a hook only when it is executable (as packaged, they are not).
    let hook = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(host.path(p)).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    };
    let tables: Option<Vec<String>> = [false, true].into_iter().map(|v6| host.netfilter_save(v6).ok()).collect();
    let setup = Setup {
        published: want.published,
        defaults: read("/etc/default/ufw"),
        rules_files: ["before.rules", "before6.rules", "after.rules", "after6.rules"]
            .map(|f| read(&format!("/etc/ufw/{f}"))),
        hooks: hook("/etc/ufw/before.init") || hook("/etc/ufw/after.init"),
        tables: tables.map(|t| t.join("\n")),
        iptables: crate::runner::find_on_path("iptables").and_then(|p| std::fs::canonicalize(p).ok()),
    };
    setup.commutes()
}

/// What decides [`commutes_with_engine`] (`None`: could not be read).
struct Setup {
    published: Published,
    /// /etc/default/ufw.
    defaults: Option<String>,
    /// ufw's before/after rules files of both families.
    rules_files: [Option<String>; 4],
    /// Whether ufw's `before.init` or `after.init` is executable (ufw runs it).
    hooks: bool,
    /// The live netfilter tables, both families, as iptables-save prints them.
    tables: Option<String>,
    /// The iptables binary, links resolved (`xtables-nft-multi`, `xtables-legacy-multi`).
    iptables: Option<PathBuf>,
}

impl Setup {
    fn commutes(&self) -> bool {
        let Some(defaults) = &self.defaults else { return false };
        let own_builtins = setting(defaults, "MANAGE_BUILTINS").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let ipv6 = setting(defaults, "IPV6").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let reaches_docker =
            self.rules_files.iter().any(|f| f.as_deref().is_none_or(|t| t.contains("DOCKER") || t.contains("*nat")));
        let vakt_rules_left = self.tables.as_deref().is_none_or(|t| {
            t.lines().any(|l| l.starts_with("-A DOCKER-USER ") && published::has_vakt_rules(&[l.to_string()]))
        });
        let nf_tables =
            self.iptables.as_deref().and_then(Path::file_name).is_some_and(|n| n.to_string_lossy().contains("nft"));
        self.published == Published::Docker
            && !own_builtins
            && ipv6
            && !reaches_docker
            && !self.hooks
            && !vakt_rules_left
            && nf_tables
    }
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
            let foreign = published::foreign_docker_user(text);
            if on && !foreign.is_empty() {
                let lines: Vec<String> = foreign.iter().map(|n| n.to_string()).collect();
                plan.pass(
                    Finding::new(
                        format!("{id}.foreign"),
                        format!("DOCKER-USER is declared outside vakt's block in {name}"),
                        Status::Failed,
                    )
                    .with_evidence(format!(
                        "{} line {}: ufw loads the file in order and each declaration flushes the chain, so these lines, not the profile, decide what reaches published ports",
                        path.display(),
                        lines.join(", ")
                    ))
                    .with_evidence("remove them (the profile's target = \"containers\" rules say the same), then run vakt apply"),
                );
            }
            let blocks = text.lines().filter(|l| l.trim_end() == published::BEGIN).count();
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
                    if blocks > 1 {
                        f.evidence.push(format!(
                            "{blocks} vakt blocks in {name}: the later ones flush DOCKER-USER after the first; one is kept"
                        ));
                    }
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
    fn plan_live(&self, o: &Observed, plan: &mut Plan<Action>, wrote: bool, run: &Run) {
        let want = self.want;
        let on = want.published == Published::Profile;
        let enabling = plan.actions.iter().any(|a| matches!(a, Action::Run(v) if v.iter().any(|w| w == "enable")));
        let active = o.enabled && want.enabled && !enabling;
        let reload =
            |plan: &mut Plan<Action>, f: Finding| fix_by(plan, f, vec![run(vec!["ufw".into(), "reload".into()])]);
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
                let commands = argvs.into_iter().map(|a| run(a.into_iter().map(String::from).collect())).collect();
                let f = Finding::new(id, format!("vakt's DOCKER-USER rules are gone ({})", family(*v6)), Status::Drift)
                    .with_evidence(
                        "published_ports = \"docker\": Docker's own rules decide; ufw does not manage DOCKER-USER",
                    );
                fix_by(plan, f, commands);
            }
        }
    }
}

/// A ufw command that adds a rule (`ufw allow ...`, also with `--rootdir`).
fn is_add(action: &Action) -> bool {
    let Action::Run(argv) = action else { return false };
    argv[0] == "ufw"
        && argv[1..]
            .iter()
            .find(|w| !w.starts_with("--"))
            .is_some_and(|w| matches!(w.as_str(), "allow" | "limit" | "deny" | "reject"))
}

impl Firewall<'_> {
    /// A disabled ufw without rules (a first apply): rather than one ufw process per rule,
    /// each family's rule file is written once, exactly as the ufw commands would leave it
    /// (rules_file.rs), and `ufw --force enable` loads it. Only a plan that adds rules and
    /// enables, with ufw's log level and policies known, takes this way.
    fn write_rules_at_once(&self, o: &Observed, plan: &mut Plan<Action>) {
        let (Some(loglevel), Some(incoming), Some(outgoing), Some(routed)) =
            (o.loglevel, o.incoming, o.outgoing, o.routed)
        else {
            return;
        };
        let only_adds = plan.actions.iter().all(|a| {
            is_add(a)
                || matches!(a, Action::Write(..))
                || matches!(a, Action::Run(argv) if is_switch(argv) && argv.iter().any(|w| w == "enable"))
        });
        let Some(first) = plan.actions.iter().position(is_add) else { return };
        if o.enabled || !o.may_write_rules || !o.rules.is_empty() || !o.unreadable.is_empty() || !only_adds {
            return;
        }
        let layout = rules_file::Layout { loglevel, policies: [incoming, outgoing, routed] };
        let rules: Vec<&Rule> = self.want.host_rules().collect();
        // An IPv6 rule with IPv6 off in ufw is left to ufw, which says so; so is an
        // IPv4-compatible or -mapped IPv6 address, which ufw writes in the dotted form.
        let v6_from = |r: &&Rule| match r.from {
            Some(IpNet::V6(n)) => Some(n),
            _ => None,
        };
        if rules.iter().filter_map(v6_from).any(|n| !o.ipv6 || (n.prefix_len() > 0 && n.addr().to_ipv4().is_some())) {
            return;
        }
        let mut files = Vec::new();
        for v6 in [false, true].into_iter().filter(|v6| !v6 || o.ipv6) {
            let mine: Vec<&Rule> = rules.iter().copied().filter(|r| families(r, o.ipv6).contains(&v6)).collect();
            // ufw leaves a family it adds nothing to as it is.
            if mine.is_empty() {
                continue;
            }
            files.push(Action::Rules(o.rule_files[usize::from(v6)].clone(), rules_file::render(&mine, v6, layout)));
        }
        plan.actions.retain(|a| !is_add(a));
        plan.actions.splice(first..first, files);
        for f in plan.findings.iter_mut().filter(|f| f.id.starts_with("firewall.rule.")) {
            if let Some(c) = &mut f.change {
                c.push_str(" (written into ufw's rule files, as ufw writes them, and loaded once)");
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

    fn shared_reads(&self, host: &Host) -> Vec<Shared> {
        // Without ufw's files the observation stops before it reads the tables.
        if !host.is_live() || !UfwFiles::present(host) {
            return Vec::new();
        }
        let ipv6 = manages_ipv6(&host.read("/etc/default/ufw").unwrap_or_default());
        [false, true].into_iter().filter(|v6| !v6 || ipv6).map(Shared::Netfilter).collect()
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let ufw = UfwFiles::read(host)?;
        let ipv6 = ufw.ipv6;
        let mut after = Vec::new();
        for (v6, path) in [(false, "/etc/ufw/after.rules"), (true, "/etc/ufw/after6.rules")] {
            if !v6 || ipv6 {
                let text = match host.read(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    other => other?,
                };
                after.push((v6, host.file_path(path), text));
            }
        }
        // The live tables and sshd's ports are read at once: both wait on other processes.
        let (netfilter, ssh) = std::thread::scope(|s| {
            let netfilter = s.spawn(|| host.is_live().then(|| read_netfilter(host, ipv6)));
            let ssh = ssh::discover(host);
            (netfilter.join().unwrap_or_else(|_| Some(Err("reading the live firewall panicked".into()))), ssh)
        });
        Ok(Observed {
            enabled: ufw.enabled,
            ipv6,
            incoming: ufw.incoming,
            outgoing: ufw.outgoing,
            routed: ufw.routed,
            loglevel: ufw.loglevel,
            rules: ufw.rules,
            rule_files: ["/etc/ufw/user.rules", "/etc/ufw/user6.rules"].map(|p| host.file_path(p)),
            may_write_rules: crate::runner::on_path("ufw")
                && (!ipv6 || !host.is_live() || Path::new("/proc/sys/net/ipv6").exists()),
            unreadable: ufw.unreadable,
            ssh,
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
        let run = |argv: Vec<String>| match &o.offline {
            _ if defer(&argv) => Command { text: shell_words(&argv), now: None },
            Some(root) => {
                let argv = in_root(argv, root);
                Command { text: shell_words(&argv), now: Some(Action::Run(argv)) }
            }
            None => Command { text: shell_words(&argv), now: Some(Action::Run(argv)) },
        };

        let wrote = self.plan_published_files(o, &mut plan);
        let mut lists = self.plan_rules(o, &mut plan, &run);
        self.plan_prune(o, &mut plan, &run, &mut lists);
        self.lint_rules(o, &mut plan, &lists);
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
                let command = run(vec!["ufw".into(), "default".into(), wanted.as_str().into(), name.into()]);
                let was = got.map_or("unset", |p| p.as_str());
                fix_by(
                    &mut plan,
                    Finding::new(id, title, Status::Drift).with_evidence(format!("now {was}")),
                    vec![command],
                );
            }
        }
        let title = if want.enabled { "ufw enabled" } else { "ufw disabled" };
        if o.enabled == want.enabled {
            plan.pass(Finding::ok("firewall.enabled", title));
        } else {
            let argv = if want.enabled { vec!["ufw", "--force", "enable"] } else { vec!["ufw", "disable"] };
            let command = run(argv.into_iter().map(String::from).collect());
            fix_by(&mut plan, Finding::new("firewall.enabled", title, Status::Drift), vec![command]);
        }
        self.plan_live(o, &mut plan, wrote, &run);
        if o.docker_present && want.published == Published::Docker {
            plan.warn(
                "Docker is present: ports it publishes bypass ufw (DNATed before ufw's INPUT rules, accepted in \
                 FORWARD); set `published_ports = \"profile\"` in [firewall] to make the profile govern them",
            );
        }
        if want.enabled
            && !plan.actions.is_empty()
            && let Some(guard) = self.lockout(o, &lists)
        {
            plan.actions.clear();
            for f in plan.findings.iter_mut().filter(|f| f.change.is_some()) {
                f.evidence
                    .push("refused: the SSH lockout guard stopped every firewall change (firewall.ssh-guard)".into());
            }
            plan.findings.push(guard);
        }
        self.write_rules_at_once(o, &mut plan);
        plan
    }

    /// ufw's files and rules, and the DOCKER-USER block: the netfilter tables, not the engine.
    fn touches(&self, _actions: &[Action]) -> Touches {
        Touches::Netfilter
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Run(argv) => {
                    if is_switch(&argv) {
                        crate::failpoint::hit("firewall-load");
                    }
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    host.runner.run_ok(&argv, UFW_TIMEOUT)?;
                }
                Action::Write(path, text) => crate::fsutil::write_atomic(&path, text.as_bytes(), true)?,
                Action::Rules(path, text) => crate::fsutil::write_atomic(&path, text.as_bytes(), false)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewall_commutes_with_the_engine_only_where_it_leaves_dockers_chains_alone() {
        let packaged = || Setup {
            published: Published::Docker,
            defaults: Some("IPV6=yes\nMANAGE_BUILTINS=no\n".into()),
            rules_files: std::array::from_fn(|_| Some("*filter\n:ufw-after-input - [0:0]\nCOMMIT\n".into())),
            hooks: false,
            tables: Some("*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\nCOMMIT\n".into()),
            iptables: Some("/usr/sbin/xtables-nft-multi".into()),
        };
        assert!(packaged().commutes());
        let waits: [(&str, Setup); 11] = [
            ("the block is to be written", Setup { published: Published::Profile, ..packaged() }),
            ("legacy iptables", Setup { iptables: Some("/usr/sbin/xtables-legacy-multi".into()), ..packaged() }),
            ("no iptables", Setup { iptables: None, ..packaged() }),
            (
                "ufw flushes the built-ins",
                Setup { defaults: Some("IPV6=yes\nMANAGE_BUILTINS=yes\n".into()), ..packaged() },
            ),
            ("ufw restores all of IPv6", Setup { defaults: Some("IPV6=no\n".into()), ..packaged() }),
            ("unreadable defaults", Setup { defaults: None, ..packaged() }),
            ("an init hook", Setup { hooks: true, ..packaged() }),
            ("unreadable tables", Setup { tables: None, ..packaged() }),
            (
                "vakt's rules left in DOCKER-USER",
                Setup { tables: Some("-A DOCKER-USER -m comment --comment vakt -j RETURN\n".into()), ..packaged() },
            ),
            ("a rules file fills DOCKER-USER", {
                let mut s = packaged();
                s.rules_files[2] = Some("*filter\n:DOCKER-USER - [0:0]\nCOMMIT\n".into());
                s
            }),
            ("a nat section", {
                let mut s = packaged();
                s.rules_files[0] =
                    Some("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n".into());
                s
            }),
        ];
        for (why, setup) in waits {
            assert!(!setup.commutes(), "{why}");
        }
        let mut unreadable = packaged();
        unreadable.rules_files[1] = None;
        assert!(!unreadable.commutes(), "an unreadable rules file");
    }

    const USER_RULES: &str = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368\n\
        -A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\
        ### tuple ### allow tcp 2377 0.0.0.0/0 any 10.0.0.0/8 in comment=737761726d\n\
        ### tuple ### allow udp 6000:6007 0.0.0.0/0 any 0.0.0.0/0 in\n\
        ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n";

    fn profile(text: &str) -> Wanted {
        crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
    }

    fn v4(text: &str) -> Vec<UfwRule> {
        parse_rules(text, None).0
    }

    fn observed(rules: Vec<UfwRule>) -> Observed {
        Observed {
            enabled: true,
            ipv6: false,
            incoming: Some(Policy::Deny),
            outgoing: Some(Policy::Allow),
            routed: Some(Policy::Deny),
            loglevel: Some(LogLevel::Low),
            rules,
            rule_files: [PathBuf::from("/etc/ufw/user.rules"), PathBuf::from("/etc/ufw/user6.rules")],
            may_write_rules: true,
            unreadable: vec![],
            ssh: SshFacts { ports: [22].into(), client: None, evidence: vec![] },
            docker_present: false,
            offline: None,
            after: vec![],
            netfilter: None,
        }
    }

    #[test]
    fn parses_tuples_and_marks_app_rules_foreign() {
        let rules = v4(USER_RULES);
        assert_eq!(rules.len(), 4);
        assert_eq!((rules[1].dports.to_string(), rules[1].src.to_string()), ("2377".into(), "10.0.0.0/8".into()));
        assert!(rules[0].is_plain() && !rules[3].is_plain());
    }

    #[test]
    fn converged_state_plans_nothing() {
        let want = profile(
            "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\nfrom = \"10.0.0.0/8\"\n[[firewall.allow]]\nport = \"6000:6007\"\nproto = \"udp\"\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(v4(USER_RULES)));
        assert!(plan.actions.is_empty(), "{:?}", plan.findings);
        assert!(plan.warnings.iter().any(|w| w.contains("does not manage")), "the app rule is reported, not pruned");
    }

    #[test]
    fn missing_rules_and_prune_plan_exact_commands() {
        let want = profile(
            "[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\ncomment = \"web server\"\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(v4(USER_RULES)));
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
        let rules = v4("### tuple ### allow_log tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### deny_log-all any any 0.0.0.0/0 any 198.51.100.7 in\n\
             ### tuple ### route:allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in\n");
        assert_eq!((rules[0].action, rules[0].log), (RuleAction::Allow, model::Log::New));
        assert_eq!(
            rules[0].delete_command(true).map(|a| a.join(" ")),
            Some("ufw delete allow log proto tcp from any to any port 80".into())
        );
        assert_eq!((rules[1].action, rules[1].log), (RuleAction::Deny, model::Log::All));
        assert!(!rules[2].is_plain(), "route rules are not vakt's");
    }

    #[test]
    fn an_add_that_would_replace_an_operators_limit_is_refused() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n");
        let plan =
            Firewall::new(&want, vec![]).plan(&observed(v4("### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n")));
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
        let plan = Firewall::new(&want, vec![]).plan(&observed(v4(existing)));
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

    fn guard(want: &str, o: &Observed) -> Option<Finding> {
        Firewall::new(&profile(want), vec![]).plan(o).findings.into_iter().find(|f| f.id == "firewall.ssh-guard")
    }

    /// Issue 21: the first match decides, as in netfilter; each case passed the old guard.
    #[test]
    fn the_guard_judges_rules_in_order() {
        let mut o = observed(vec![]);
        o.enabled = false;
        let deny_all_first = "[firewall]\n[[firewall.rule]]\naction = \"deny\"\nport = \"1:65535\"\nproto = \"tcp\"\n\
            [[firewall.rule]]\naction = \"allow\"\nport = 22\n";
        let f = guard(deny_all_first, &o).expect("refused");
        assert!(f.title.contains("22/tcp (IPv4)") && f.title.contains("deny 1:65535/tcp from anywhere"), "{}", f.title);
        assert!(f.evidence.iter().any(|e| e.contains("is blocked by ufw rule `deny 1:65535/tcp")), "{:?}", f.evidence);

        let admin = "[firewall]\nadmin = [\"10.9.8.0/24\"]\n[[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.0.0/16\"\n\
            [[firewall.rule]]\naction = \"limit\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.0.0.0/8\"\n";
        let f = guard(admin, &o).expect("refused");
        assert!(f.evidence.iter().any(|e| e.contains("(admin network 10.9.8.0/24)")), "{:?}", f.evidence);
        // The same rules the other way round let the admin network in.
        let swapped = "[firewall]\nadmin = [\"10.9.8.0/24\"]\n[[firewall.rule]]\naction = \"limit\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.0.0.0/8\"\n\
            [[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.0.0/16\"\n";
        assert!(guard(swapped, &o).is_none());

        // incoming = "allow" does not switch the guard off.
        let allow_policy = "[firewall]\nincoming = \"allow\"\n[[firewall.rule]]\naction = \"deny\"\nport = 22\n";
        assert!(guard(allow_policy, &o).is_some());

        // Half an admin network blocked is blocked: every stretch of it is asked.
        let half = "[firewall]\nadmin = [\"10.9.8.0/24\"]\n[[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.8.64/26\"\n\
            [[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.8.0/24\"\n";
        let f = guard(half, &o).expect("refused");
        assert!(f.evidence.iter().any(|e| e.contains("22/tcp from 10.9.8.64 (admin network")), "{:?}", f.evidence);

        // An operator's deny already in ufw, before where the profile's allow would go.
        let mut banned = observed(v4("### tuple ### deny tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n"));
        banned.enabled = false;
        assert!(guard("[firewall]\n[[firewall.rule]]\naction = \"allow\"\nport = 80\n", &banned).is_some());
    }

    #[test]
    fn a_peer_given_as_one_host_converges() {
        let want = profile(
            "[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\nproto = \"tcp\"\nfrom = \"10.0.1.7\"\n",
        );
        let fw = Firewall::new(&want, vec![]);
        let plan = fw.plan(&observed(v4("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n")));
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(changes, vec!["ufw allow proto tcp from 10.0.1.7 to any port 2377"]);
        // ufw stores the host without a mask: that is the profile's rule, neither missing nor extra.
        let plan = fw.plan(&observed(v4(
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow tcp 2377 0.0.0.0/0 any 10.0.1.7 in\n",
        )));
        assert!(plan.actions.is_empty(), "{:?}", plan.findings);
    }

    #[test]
    fn a_missing_rule_is_inserted_before_the_rules_the_profile_lists_after_it() {
        let want = profile(
            "[firewall]\n[[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.8.0/24\"\n\
             [[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.0.0/16\"\n\
             [[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\n",
        );
        let mut o = observed(v4(
            "### tuple ### deny tcp 22 0.0.0.0/0 any 10.9.0.0/16 in\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n",
        ));
        o.ssh.client = Some("10.9.8.5".parse().expect("addr"));
        let plan = Firewall::new(&want, vec![]).plan(&o);
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(changes, vec!["ufw insert 1 allow proto tcp from 10.9.8.0/24 to any port 22"]);

        // Out of order already, where it matters: refused with the reorder.
        let o = observed(v4(
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow tcp 22 0.0.0.0/0 any 10.9.8.0/24 in\n### tuple ### deny tcp 22 0.0.0.0/0 any 10.9.0.0/16 in\n",
        ));
        let plan = Firewall::new(&want, vec![]).plan(&o);
        let order = plan.findings.iter().find(|f| f.id.starts_with("firewall.order.")).expect("order finding");
        assert_eq!(order.status, Status::Failed);
        assert!(
            order.evidence.iter().any(|e| e.contains("ufw delete allow proto tcp from any to any port 22")),
            "{order:?}"
        );
    }

    /// A review found these: a one-family extra deleted with `from any` took the wanted twin
    /// (and SSH with it); an appended rule landed before one inserted later in the same run.
    #[test]
    fn prune_and_insert_keep_what_the_profile_wants() {
        let want = profile(
            "[firewall]\nprune = true\nadmin = [\"203.0.113.0/24\"]\n[[firewall.allow]]\nport = 22\nproto = \"tcp\"\nfrom = \"0.0.0.0/0\"\n",
        );
        let mut o = observed(v4("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n"));
        o.ipv6 = true;
        o.rules.extend(parse_rules("", Some("### tuple ### allow tcp 22 ::/0 any ::/0 in\n")).0);
        let plan = Firewall::new(&want, vec![]).plan(&o);
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(changes, vec!["ufw delete allow proto tcp from ::/0 to any port 22"]);

        let want = profile(
            "[firewall]\nadmin = [\"10.0.0.0/8\"]\n[[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.0.0.0/8\"\n\
             [[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\n[[firewall.rule]]\naction = \"deny\"\nport = \"1:1000\"\nproto = \"tcp\"\n",
        );
        let plan = Firewall::new(&want, vec![])
            .plan(&observed(v4("### tuple ### deny tcp 1:1000 0.0.0.0/0 any 0.0.0.0/0 in\n")));
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        // The allow must come before the deny of 1:1000, which meets its traffic; the deny of
        // 22 may follow it (the same action): appended, it judges every packet as in place.
        assert_eq!(
            changes,
            vec![
                "ufw insert 1 allow proto tcp from 10.0.0.0/8 to any port 22",
                "ufw deny proto tcp from any to any port 22",
            ]
        );
        // Rules that meet no later rule with another action are appended, one command each.
        let plan =
            Firewall::new(&want, vec![]).plan(&observed(v4("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n")));
        assert!(
            plan.findings.iter().filter_map(|f| f.change.as_deref()).all(|c| !c.contains("insert")),
            "{:?}",
            plan.findings
        );
        assert!(!plan.findings.iter().any(|f| f.id == "firewall.ssh-guard"), "{:?}", plan.findings);

        // A review found this: an appended rule (443) must not push a later missing one (the
        // deny of 80 from 10.0.0.0/8) past the allow of 80 it must precede.
        let want = profile(
            "[firewall]\n[[firewall.rule]]\nport = 22\n[[firewall.rule]]\nport = 443\n\
             [[firewall.rule]]\naction = \"deny\"\nport = 80\nfrom = \"10.0.0.0/8\"\n[[firewall.rule]]\nport = 80\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(v4(
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n",
        )));
        let changes: Vec<String> = plan.findings.iter().filter_map(|f| f.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                "ufw allow proto tcp from any to any port 443",
                "ufw insert 2 deny proto tcp from 10.0.0.0/8 to any port 80",
            ]
        );

        // A session from the machine itself: ufw accepts loopback before any rule.
        let mut o = observed(vec![]);
        o.enabled = false;
        o.ssh.client = Some("127.0.0.1".parse().expect("addr"));
        let want = "[firewall]\nadmin = [\"10.0.0.0/8\"]\n[[firewall.allow]]\nport = 22\nfrom = \"10.0.0.0/8\"\n";
        assert!(guard(want, &o).is_none());
    }

    #[test]
    fn the_world_under_any_name_warns() {
        for from in ["", "from = \"0.0.0.0/0\"\n", "from = \"::/0\"\n", "from = \"0.0.0.0/1\"\n"] {
            let want = profile(&format!(
                "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\nproto = \"tcp\"\n{from}"
            ));
            let plan = Firewall::new(&want, vec![(2377, "swarm management".into())]).plan(&observed(vec![]));
            assert!(
                plan.warnings.iter().any(|w| w.contains("2377 (swarm management) is open to the world")),
                "{from}: {:?}",
                plan.warnings
            );
        }
        let want = profile(
            "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\nproto = \"tcp\"\nfrom = \"10.0.0.0/8\"\n",
        );
        let plan = Firewall::new(&want, vec![(2377, "swarm management".into())]).plan(&observed(vec![]));
        assert!(!plan.warnings.iter().any(|w| w.contains("open to the world")), "{:?}", plan.warnings);
        // A containers rule from an IPv6 network, with IPv6 off in ufw.
        let want = profile(
            "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 8080\ntarget = \"containers\"\nfrom = \"2001:db8::/32\"\n",
        );
        let plan = Firewall::new(&want, vec![]).plan(&observed(vec![]));
        assert!(plan.warnings.iter().any(|w| w.contains("IPv6 is disabled")), "{:?}", plan.warnings);
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
        let mut o = with_after(observed(v4(USER_RULES)), "*filter\nCOMMIT\n");
        o.netfilter = live(Netfilter {
            ufw_loaded: true,
            docker_user: Some(vec![]),
            docker_user_hooked: true,
            ..Default::default()
        });
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
        o.netfilter = live(Netfilter {
            ufw_loaded: true,
            docker_user: Some(rules),
            docker_user_hooked: true,
            ..Default::default()
        });
        let plan = fw.plan(&o);
        assert!(plan.actions.is_empty(), "{:?}", plan.findings);

        // Docker flushed nothing, but someone did: the live rules are gone, a reload restores them.
        o.netfilter = live(Netfilter {
            ufw_loaded: true,
            docker_user: Some(vec![]),
            docker_user_hooked: true,
            ..Default::default()
        });
        let plan = fw.plan(&o);
        let live = plan.findings.iter().find(|f| f.id == "firewall.published-ports.live").expect("live finding");
        assert_eq!((live.status, live.change.as_deref()), (Status::Drift, Some("ufw reload")));
    }

    #[test]
    fn enabled_in_the_file_but_not_loaded_is_drift() {
        let want = profile("[firewall]\n[[firewall.allow]]\nport = 22\n");
        let mut o = with_after(observed(v4(USER_RULES)), "");
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
        let mut o = with_after(observed(v4(USER_RULES)), &format!("*filter\nCOMMIT\n\n{block}"));
        o.docker_present = true;
        o.netfilter = live(Netfilter {
            ufw_loaded: true,
            docker_user: Some(published::chain_rules(&on, false)),
            docker_user_hooked: true,
            ..Default::default()
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

    /// A model of what the ufw commands vakt plans do to ufw's state: ufw's tuple for the
    /// command, appended, inserted at its position, or deleted.
    fn run_model(o: &mut Observed, argv: &[String]) {
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        let tuple = |action: &str, v6: bool| {
            let net = |w: &str| if w == "any" { model::any_net(v6).to_string() } else { w.to_string() };
            let src = net(after("from").unwrap_or("any"));
            let to = words.iter().position(|w| *w == "to").expect("to");
            let dport = if words.get(to + 2) == Some(&"port") { words[to + 3] } else { "any" };
            let text = format!(
                "### tuple ### {action} {} {dport} {} any {src} in\n",
                after("proto").unwrap_or("any"),
                model::any_net(v6)
            );
            model::parse_rules(&text, v6).0.remove(0)
        };
        let fams = |o: &Observed| -> Vec<bool> {
            match after("from").unwrap_or("any") {
                "any" if o.ipv6 => vec![false, true],
                "any" => vec![false],
                s => vec![s.contains(':')],
            }
        };
        match words[1] {
            "insert" => {
                let n: usize = words[2].parse().expect("position");
                for v6 in fams(o) {
                    let t = tuple(words[3], v6);
                    let v4_len = o.rules.iter().filter(|r| !r.v6).count();
                    let at = n - 1;
                    let mut list = [family_rules(&o.rules, false), family_rules(&o.rules, true)];
                    let at = if v6 { at - v4_len } else { at };
                    if !list[usize::from(v6)].contains(&t) {
                        list[usize::from(v6)].insert(at, t);
                    }
                    o.rules = list.concat();
                }
            }
            action @ ("allow" | "limit" | "deny" | "reject") => {
                for v6 in fams(o) {
                    let t = tuple(action, v6);
                    // ufw keeps one rule per traffic: the same traffic with another action is replaced.
                    if let Some(same) = o.rules.iter_mut().find(|r| r.same_traffic_as(&t)) {
                        *same = t;
                    } else {
                        let v4_len = o.rules.iter().filter(|r| !r.v6).count();
                        if v6 { o.rules.push(t) } else { o.rules.insert(v4_len, t) }
                    }
                }
            }
            "delete" => {
                let log = if matches!(words[3], "log" | "log-all") { words[3] } else { "" };
                let action = if log.is_empty() { words[2].to_string() } else { format!("{}_{log}", words[2]) };
                for v6 in fams(o) {
                    let t = tuple(&action, v6);
                    o.rules.retain(|r| !(r.same_traffic_as(&t) && r.action == t.action && r.log == t.log));
                }
            }
            "default" => {
                let p = Policy::from_ufw(words[2]);
                match words[3] {
                    "incoming" => o.incoming = p,
                    "outgoing" => o.outgoing = p,
                    _ => o.routed = p,
                }
            }
            "--force" => o.enabled = true,
            "disable" => o.enabled = false,
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

    fn tuple() -> impl Strategy<Value = UfwRule> {
        (
            prop::sample::select(vec!["22", "80", "443", "5432"]),
            prop::sample::select(vec!["tcp", "udp", "any"]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            (
                prop::sample::select(vec!["allow", "limit", "deny", "reject"]),
                prop::sample::select(vec!["", "_log", "_log-all"]),
            ),
        )
            .prop_map(|(port, proto, v6, limited, foreign, (action, log))| {
                let src = match (limited, v6) {
                    (true, true) => "2001:db8::/32".to_string(),
                    (true, false) => "10.0.0.0/8".to_string(),
                    (false, _) => model::any_net(v6).to_string(),
                };
                let app = if foreign { " Foo - in" } else { " in" };
                let text =
                    format!("### tuple ### {action}{log} {proto} {port} {} any {src}{app}\n", model::any_net(v6));
                model::parse_rules(&text, v6).0.remove(0)
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
            let mut existing: Vec<UfwRule> = existing.into_iter().filter(|t| ipv6 || !t.v6).collect();
            // ufw keeps one rule per traffic and family.
            let mut kept: Vec<UfwRule> = Vec::new();
            for t in existing.drain(..) {
                if !kept.iter().any(|k| k.same_traffic_as(&t)) {
                    kept.push(t);
                }
            }
            let existing = [family_rules(&kept, false), family_rules(&kept, true)].concat();
            let existing_blocking: Vec<UfwRule> = existing.iter().filter(|t| t.action != RuleAction::Allow).cloned().collect();
            let mut state = Observed {
                enabled, ipv6, incoming, outgoing, routed,
                loglevel: Some(LogLevel::Low),
                rules: existing,
                rule_files: [PathBuf::from("user.rules"), PathBuf::from("user6.rules")],
                may_write_rules: true,
                unreadable: vec![],
                ssh: SshFacts { ports: [22].into(), client: None, evidence: vec![] },
                docker_present: false,
                offline: None,
                after: vec![],
                netfilter: None,
            };
            let plan = fw.plan(&state);
            let refused = plan.findings.iter().any(|f| f.id == "firewall.ssh-guard");
            for action in plan.actions {
                match action {
                    Action::Run(argv) => run_model(&mut state, &argv),
                    // ufw's file written at once: what it holds is what ufw will read back.
                    Action::Rules(path, text) => {
                        let v6 = path.ends_with("user6.rules");
                        state.rules.retain(|r| r.v6 != v6);
                        state.rules.extend(model::parse_rules(&text, v6).0);
                    }
                    Action::Write(..) => {}
                }
            }
            let again = fw.plan(&state);
            if refused {
                // The guard refused: nothing ran, and it refuses again.
                prop_assert!(again.findings.iter().any(|f| f.id == "firewall.ssh-guard"));
                return Ok(());
            }
            prop_assert!(again.actions.is_empty(), "still planned: {:?}", again.findings.iter().filter_map(|f| f.change.clone()).collect::<Vec<_>>());
            if prune {
                prop_assert!(state.rules.iter().all(|t| !t.is_plain() || t.action != RuleAction::Allow || want.rules.iter().any(|r| t.is(r))), "extras left: {:?}", state.rules);
            }
            // A rule that blocks is never deleted unless the profile asks for the same.
            for t in existing_blocking.iter() {
                prop_assert!(state.rules.contains(t), "deleted a blocking rule it does not own: {t:?}");
            }
            // After the plan, the profile's rules stand in ufw in the profile's order wherever
            // order decides (overlapping traffic, opposite verdicts), or the run says it does not.
            let profile: Vec<&Rule> = want.host_rules().collect();
            for v6 in [false, true] {
                let placed: Vec<(UfwRule, usize)> = family_rules(&state.rules, v6).into_iter().filter_map(|t| profile.iter().position(|r| t.is(r)).map(|i| (t, i))).collect();
                for (n, (ta, a)) in placed.iter().enumerate() {
                    for (tb, b) in &placed[n + 1..] {
                        let decides = b < a && overlaps(ta, tb) && profile[*a].action.admits() != profile[*b].action.admits();
                        prop_assert!(!decides || again.findings.iter().any(|f| f.id.starts_with("firewall.order.") && f.status == Status::Failed), "out of order: {:?} before {:?}", ta.describe(), tb.describe());
                    }
                }
            }
        }
    }
}
