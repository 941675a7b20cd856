//! A network of our own for partition tests: one network namespace per server and one for
//! the clients, each with a veth pair to a bridge in a switch namespace of its own, so no
//! packet touches the machine's own network. Cuts are blackhole routes inside a server's
//! namespace (`ip route add blackhole ADDR/32`): what that server sends to ADDR is dropped,
//! which cuts one direction; both directions are two routes. Everything is removed when the
//! [`Net`] is dropped, even after a failed assertion.
//!
//! Needs root (CI runs as root) and `ip` (iproute2).

use std::collections::BTreeSet;
use std::fs::File;
use std::process::Command;

/// The subnet of the test network: servers at .1, .2, ..., clients at .100.
const SUBNET: &str = "10.77.0";

pub struct Net {
    tag: String,
    servers: usize,
    /// Directed cuts in force: (from, to) server indexes.
    cuts: BTreeSet<(usize, usize)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Creates the namespaces, veths and bridge for `servers` servers and one client side.
    pub fn new(servers: usize) -> Net {
        let tag = format!("us{}", std::process::id() % 100_000);
        let net = Net {
            tag,
            servers,
            cuts: BTreeSet::new(),
        };
        let switch = net.switch_ns();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let mut sides: Vec<(String, String)> = (0..servers)
            .map(|i| (net.server_ns(i), Net::server_addr(i)))
            .collect();
        sides.push((net.client_ns(), Net::client_addr()));
        for (n, (ns, addr)) in sides.iter().enumerate() {
            ip(&["netns", "add", ns]);
            let (inner, outer) = (format!("{}i{n}", net.tag), format!("{}o{n}", net.tag));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", ns]);
            ip(&["link", "set", &outer, "netns", &switch]);
            ip(&["-n", &switch, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &outer, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", ns, "link", "set", &inner, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// The namespace server `i` runs in.
    pub fn server_ns(&self, i: usize) -> String {
        format!("{}-s{i}", self.tag)
    }

    /// The namespace the clients (and the test's own requests) run in.
    pub fn client_ns(&self) -> String {
        format!("{}-c", self.tag)
    }

    pub fn server_addr(i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    pub fn client_addr() -> String {
        format!("{SUBNET}.100")
    }

    /// Moves the calling thread into the clients' namespace: every socket it opens from now
    /// on is there, and so is every process it starts.
    pub fn enter_client_ns(&self) {
        let file = File::open(format!("/run/netns/{}", self.client_ns()))
            .expect("the client namespace exists");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the client namespace");
    }

    /// Drops what `from` sends to `to`.
    pub fn cut(&mut self, from: usize, to: usize) {
        if self.cuts.insert((from, to)) {
            let target = format!("{}/32", Net::server_addr(to));
            ip(&[
                "-n",
                &self.server_ns(from),
                "route",
                "add",
                "blackhole",
                &target,
            ]);
        }
    }

    /// Restores what `from` sends to `to`.
    pub fn restore(&mut self, from: usize, to: usize) {
        if self.cuts.remove(&(from, to)) {
            let target = format!("{}/32", Net::server_addr(to));
            ip(&[
                "-n",
                &self.server_ns(from),
                "route",
                "del",
                "blackhole",
                &target,
            ]);
        }
    }

    /// Cuts `a` and `b` apart both ways.
    pub fn split(&mut self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts `i` off from every other server, both ways (the clients still reach it).
    pub fn isolate(&mut self, i: usize) {
        for other in (0..self.servers).filter(|&o| o != i) {
            self.split(i, other);
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        let cuts: Vec<(usize, usize)> = self.cuts.iter().copied().collect();
        for (from, to) in cuts {
            self.restore(from, to);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        let mut all: Vec<String> = (0..self.servers).map(|i| self.server_ns(i)).collect();
        all.push(self.client_ns());
        all.push(self.switch_ns());
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}
