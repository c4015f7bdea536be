//! The sockets the host listens on and the processes holding them: the one reader the SSH port
//! discovery and the exposure audit share. On the running system the kernel lists them
//! through sock_diag netlink (`diag`); under `--root`, or where netlink is refused, procfs
//! reads the `/proc/net` files under the root. Holders come from `/proc` under the root.

mod diag;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use anyhow::Context;
use procfs::FromReadSI;

use crate::host::Host;
use crate::profile::Proto;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// The name the process gave itself (prctl): any text, escape it before printing.
    pub comm: String,
}

/// A listening TCP socket or an unconnected UDP one (which hears anyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// 0 when the kernel lists none (a socket being torn down). A kernel socket (a VXLAN
    /// tunnel's, nfsd's) has one like any other, but no process holds it.
    pub inode: u64,
    /// The first process found holding it; none for a kernel socket or one whose holder is
    /// gone or hidden.
    pub holder: Option<Holder>,
}

/// Which listeners to read.
#[derive(Debug, Clone, Copy)]
pub enum Only {
    /// Every listener, TCP and UDP, that the outside can address (not on loopback, not
    /// port 0), with whichever process holds it: loopback sockets' holders are not looked for.
    Reachable,
    /// TCP listeners, holders looked for only among processes of this name (the others'
    /// file descriptors are not walked).
    TcpHeldBy(&'static str),
}

/// The listeners of both families, in table order, with their holders.
pub fn listeners(host: &Host, only: Only) -> anyhow::Result<Vec<Listener>> {
    // The processes of the name, found in one pass over /proc: reading the socket tables
    // costs milliseconds in a container's network namespace, not worth it when none runs (no
    // sshd, no SSH port to find), and only their descriptors are walked.
    let among = match only {
        Only::TcpHeldBy(name) => Some(processes(host, Some(name))?),
        Only::Reachable => None,
    };
    if among.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let live = host.is_live().then(|| from_kernel(only));
    let found = match live {
        Some(Ok(found)) => found,
        Some(Err(e)) => {
            tracing::debug!("sock_diag refused ({e}); reading /proc/net instead");
            from_files(host, only)?
        }
        None => from_files(host, only)?,
    };
    let found: Vec<Entry> = match only {
        Only::Reachable => {
            found.into_iter().filter(|(_, addr, _)| !addr.ip().is_loopback() && addr.port() != 0).collect()
        }
        Only::TcpHeldBy(_) => found,
    };
    let wanted = found.iter().map(|(_, _, inode)| *inode).filter(|i| *i != 0).collect();
    let mut holders = holders(host, wanted, among)?;
    Ok(found
        .into_iter()
        .map(|(proto, addr, inode)| Listener { proto, addr, inode, holder: holders.remove(&inode) })
        .collect())
}

/// A listening socket or an unconnected UDP one: protocol, address, inode.
type Entry = (Proto, SocketAddr, u64);

/// The listeners as the kernel's sock_diag lists them: TCP in the listening state only, UDP
/// with no remote port.
fn from_kernel(only: Only) -> std::io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for v6 in [false, true] {
        let tcp = diag::dump(v6, diag::TCP, diag::LISTEN)?;
        found.extend(tcp.into_iter().map(|s| (Proto::Tcp, s.local, s.inode)));
    }
    if let Only::Reachable = only {
        for v6 in [false, true] {
            let udp = diag::dump(v6, diag::UDP, diag::ANY)?;
            found.extend(udp.into_iter().filter(|s| s.remote_port == 0).map(|s| (Proto::Udp, s.local, s.inode)));
        }
    }
    Ok(found)
}

/// The listeners as the `/proc/net` tables under the root list them.
fn from_files(host: &Host, only: Only) -> anyhow::Result<Vec<Entry>> {
    let info = procfs::current_system_info();
    let table = |name: &str| host.path(format!("/proc/net/{name}"));
    let mut tcp = procfs::net::TcpNetEntries::from_file(table("tcp"), info).context("failed to read /proc/net/tcp")?.0;
    tcp.extend(procfs::net::TcpNetEntries::from_file(table("tcp6"), info).map(|t| t.0).unwrap_or_default());
    let mut udp = Vec::new();
    if let Only::Reachable = only {
        udp = procfs::net::UdpNetEntries::from_file(table("udp"), info).context("failed to read /proc/net/udp")?.0;
        udp.extend(procfs::net::UdpNetEntries::from_file(table("udp6"), info).map(|t| t.0).unwrap_or_default());
    }
    let tcp = tcp
        .into_iter()
        .filter(|e| e.state == procfs::net::TcpState::Listen)
        .map(|e| (Proto::Tcp, e.local_address, e.inode));
    let udp = udp.into_iter().filter(|e| e.remote_address.port() == 0).map(|e| (Proto::Udp, e.local_address, e.inode));
    Ok(tcp.chain(udp).collect())
}

/// The PIDs under the root's /proc; with `name`, of the processes of that name only.
fn processes(host: &Host, name: Option<&str>) -> anyhow::Result<Vec<i32>> {
    let proc = host.path("/proc");
    let entries = std::fs::read_dir(&proc).with_context(|| format!("failed to list {}", proc.display()))?;
    let named = |e: &std::fs::DirEntry| {
        name.is_none_or(|n| {
            crate::fsutil::read_text(e.path().join("comm")).is_ok_and(|c| c.trim_end_matches('\n') == n)
        })
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()?;
            named(&e).then_some(pid)
        })
        .collect())
}

/// The process holding each of `wanted`'s inodes, as far as `/proc` shows them; with `among`,
/// among those processes only. The walk costs a readlink per open file of every process until
/// each inode is found, so it reads nothing else: no `stat` per descriptor, the name only of
/// a process found holding one.
fn holders(host: &Host, mut wanted: HashSet<u64>, among: Option<Vec<i32>>) -> anyhow::Result<HashMap<u64, Holder>> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let proc = host.path("/proc");
    let comm = |pid: i32| {
        let text = crate::fsutil::read_text(proc.join(pid.to_string()).join("comm")).unwrap_or_default();
        text.trim_end_matches('\n').to_string()
    };
    let among = match among {
        Some(among) => among,
        None => processes(host, None)?,
    };
    for pid in among {
        for inode in sockets_held(&proc.join(pid.to_string()).join("fd")) {
            if wanted.remove(&inode) {
                found.insert(inode, Holder { pid, comm: comm(pid) });
            }
        }
        if wanted.is_empty() {
            break;
        }
    }
    Ok(found)
}

/// The inodes of the sockets among the open files listed in `fd_dir` (`/proc/PID/fd`), each
/// read relative to the directory: `socket:[INODE]`. A process gone or not ours lists none.
fn sockets_held(fd_dir: &std::path::Path) -> Vec<u64> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(mut dir) = nix::dir::Dir::open(fd_dir, flags, nix::sys::stat::Mode::empty()) else { return Vec::new() };
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes().first() != Some(&b'.'))
        .collect();
    let mut inodes = Vec::new();
    for name in &names {
        match nix::fcntl::readlinkat(&dir, name.as_c_str()) {
            Ok(target) => inodes.extend(socket_inode(&target)),
            // The kernel allows a process's descriptors to be read or not as a whole (it asks
            // whether the process may be inspected: root without CAP_SYS_PTRACE in a
            // container, a security module): the first refusal stands for the rest.
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => break,
            // Closed since the listing.
            Err(_) => {}
        }
    }
    inodes
}

/// The inode of an open file's link target `socket:[INODE]`; none for anything else.
fn socket_inode(target: &std::ffi::OsStr) -> Option<u64> {
    target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test's own reachable listening socket is found, with this process as its holder;
    /// its loopback one is not listed.
    #[test]
    fn finds_its_own_listener_and_holder() {
        let socket = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let lo = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lo = lo.local_addr().expect("addr");
        let found = listeners(&Host::new("/"), Only::Reachable).expect("read /proc");
        let me = found.iter().find(|l| l.proto == Proto::Tcp && l.addr == addr).expect("our listener");
        assert_eq!(me.holder.as_ref().map(|h| h.pid), Some(std::process::id() as i32), "{me:?}");
        assert!(!found.iter().any(|l| l.addr == lo), "loopback listed: {found:?}");
    }

    /// The kernel's sock_diag and its `/proc/net` text agree on this test's own sockets: a TCP
    /// listener of each family and an unconnected UDP socket, with the same inodes, and a
    /// connected UDP socket left out by both. (Other tests bind and drop sockets meanwhile, so
    /// only our own are compared.)
    #[test]
    fn sock_diag_and_proc_net_list_the_same_listeners() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let tcp6 = std::net::TcpListener::bind("[::1]:0").ok();
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        connected.connect(udp.local_addr().expect("addr")).expect("connect");
        let kernel = from_kernel(Only::Reachable).expect("sock_diag");
        let files = from_files(&Host::new("/"), Only::Reachable).expect("/proc/net");
        let ours: Vec<(Proto, SocketAddr)> = [
            Some((Proto::Tcp, tcp.local_addr().expect("addr"))),
            tcp6.as_ref().map(|t| (Proto::Tcp, t.local_addr().expect("addr"))),
            Some((Proto::Udp, udp.local_addr().expect("addr"))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let find = |list: &[Entry], (proto, addr): (Proto, SocketAddr)| {
            list.iter().find(|(p, a, _)| *p == proto && *a == addr).map(|(_, _, inode)| *inode)
        };
        for socket in ours {
            let (k, f) = (find(&kernel, socket), find(&files, socket));
            assert!(k.is_some_and(|i| i != 0) && k == f, "{socket:?}: sock_diag {k:?}, /proc/net {f:?}");
        }
        let connected = connected.local_addr().expect("addr");
        for list in [&kernel, &files] {
            assert!(!list.iter().any(|(_, a, _)| *a == connected), "a connected UDP socket hears only its peer");
        }
        let tcp_only = from_kernel(Only::TcpHeldBy("sshd")).expect("sock_diag");
        assert!(tcp_only.iter().all(|(p, ..)| *p == Proto::Tcp));
        assert!(find(&tcp_only, (Proto::Tcp, tcp.local_addr().expect("addr"))).is_some());
    }
}
