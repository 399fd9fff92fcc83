//! Chapter 5 checks. Traffic stays on this machine: between the host and the containers on
//! the bridge crabbox0 (10.88.0.0/16), between containers, and on loopback; nothing is sent
//! to any other address. After every run, normal or failed, nothing of the container is
//! left: no `cbx…` veth, no crabbox rule, no lease in the address store, no files.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Running, Transcript};
use insta::assert_snapshot;

const GATEWAY: &str = "10.88.0.1";
const LEASES: &str = "/run/crabbox/network/crabbox0.leases";

fn ch05_run<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    let mut ch05 = common::command("ch05");
    ch05.arg("run").args(options).arg(rootfs).arg("--").args(command);
    ch05
}

/// A container that prints its id (the default hostname) and eth0's address, then `ready`,
/// then runs `then` (`cat`: waits for its stdin to close).
fn announcing(options: &[&str], then: &str) -> Running {
    let script = format!("hostname; ip -o -4 addr show dev eth0; echo ready; {then}");
    Running::spawn(&mut ch05_run(options, &common::rootfs(), &["sh", "-c", &script]))
}

/// What an [`announcing`] container said: its id and its address.
fn announcement(running: &Running) -> (String, Ipv4Addr) {
    let lines = running.wait_for_line("ready");
    let id = lines.first().expect("the container prints its hostname").clone();
    (id, address_in(&lines.join("\n")))
}

/// The address in what `ip -o -4 addr` printed: `… inet 10.88.0.2/16 …`.
fn address_in(ip_output: &str) -> Ipv4Addr {
    let after = ip_output.split_once("inet ").map(|(_, after)| after);
    let address = after.and_then(|after| after.split_once('/')).map(|(address, _)| address);
    address.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {ip_output:?}"))
}

/// Closes the container's stdin, which ends an [`announcing`] container, and checks that
/// it and its runtime exit with 0.
fn finish(mut running: Running) {
    drop(running.child.stdin.take());
    assert_eq!(running.wait_for_exit(), Some(0), "the container ends when its stdin closes");
}

/// Snapshot settings that also redact the container's address.
fn settings_with_address(address: &str) -> insta::Settings {
    let mut settings = common::settings();
    settings.add_filter(&format!(r"\b{}\b", common::regex_escape(address)), "[ADDRESS]");
    settings
}

/// What is left on the host of container `id`: its veth, its rules in nftables and
/// iptables, its lease, its files, its runtime's lock, its cgroups.
fn leftovers_of(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let veth = format!("cbx{id}");
    if Path::new("/sys/class/net").join(&veth).exists() {
        left.push(format!("veth {veth}"));
    }
    let listings = [
        Command::new("nft").args(["list", "ruleset"]).output(),
        Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output(),
    ];
    for listing in listings.into_iter().flatten() {
        let text = String::from_utf8_lossy(&listing.stdout).into_owned();
        left.extend(
            text.lines().filter(|line| line.contains(id)).map(|line| format!("rule {line}")),
        );
    }
    let leases = fs::read_to_string(LEASES).unwrap_or_default();
    left.extend(
        leases.lines().filter(|line| line.contains(id)).map(|line| format!("lease {line}")),
    );
    if Path::new("/run/crabbox/containers").join(id).exists() {
        left.push(format!("files /run/crabbox/containers/{id}"));
    }
    if Path::new("/run/crabbox/containers").join(format!("{id}.lock")).exists() {
        left.push(format!("lock /run/crabbox/containers/{id}.lock"));
    }
    if !common::cgroup_dirs_named(id).is_empty() {
        left.push(format!("cgroup {id}"));
    }
    left
}

fn assert_nothing_left(id: &str) {
    // The kernel deletes the veth pair with the container's network namespace, a moment
    // after the container has ended; the runtime only unplugs it.
    let veth = Path::new("/sys/class/net").join(format!("cbx{id}"));
    common::poll_until("the veth to go with its namespace", Duration::from_secs(10), || {
        !veth.exists()
    });
    let left = leftovers_of(id);
    assert!(left.is_empty(), "container {id} left this behind: {left:#?}");
}

/// Fetches `/` over HTTP/1.0 from `address`, or None when nothing answers (yet).
fn http_get(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits, bounded, until `address` serves a page that contains `body`.
fn assert_serves(address: SocketAddr, body: &str) {
    let mut last = None;
    common::poll_until(&format!("{address} to serve the page"), Duration::from_secs(10), || {
        last = http_get(address);
        last.as_deref().is_some_and(|response| response.contains(body))
    });
}

fn output_of(command: &mut Command) -> String {
    String::from_utf8(command.output().expect("run a host tool").stdout).unwrap()
}

/// The interface names in a /proc/net/dev listing.
fn interfaces(proc_net_dev: &str) -> BTreeSet<String> {
    let names = proc_net_dev.lines().filter_map(|line| line.split_once(':')).map(|(name, _)| name);
    names.map(|name| name.trim().to_string()).collect()
}

#[test]
fn a_container_on_the_bridge_has_its_own_address_route_and_hosts_file() {
    let script = "ip -o -4 addr; ip route; cat /etc/hosts /sys/class/net/eth0/address";
    let mut ch05 = ch05_run(&["--hostname", "box"], &common::rootfs(), &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch05);
    assert_eq!(transcript.status, 0, "{transcript}");
    let address =
        address_in(transcript.command_output().lines().find(|l| l.contains("eth0")).unwrap());
    // eth0's MAC is 02:cb and the address, byte by byte.
    let [a, b, c, d] = address.octets();
    let mac = format!("02:cb:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
    assert!(transcript.command_output().contains(&mac), "{transcript}");
    assert!(address.octets()[..2] == [10, 88] && address.to_string() != GATEWAY, "{transcript}");
    assert!(
        transcript.command_output().contains(&format!("default via {GATEWAY} dev eth0")),
        "{transcript}"
    );
    assert!(transcript.command_output().contains(&format!("{address}\tbox")), "{transcript}");
    assert_nothing_left(&common::announced_id(&transcript.output));
    let mut settings = settings_with_address(&address.to_string());
    settings.add_filter(&mac, "02:cb:[ADDRESS IN HEX]");
    let _s = settings.bind_to_scope();
    assert_snapshot!("bridge", transcript);
}

#[test]
fn a_container_reaches_its_gateway() {
    let ping = ["ping", "-c", "1", "-W", "5", GATEWAY];
    let transcript = Transcript::run(&mut ch05_run(&[], &common::rootfs(), &ping));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.command_output().contains("1 packets received"), "{transcript}");
}

#[test]
fn two_containers_on_the_bridge_reach_each_other() {
    let first = announcing(&[], "cat");
    let (first_id, first_address) = announcement(&first);
    let ping = format!("ping -c 1 -W 5 {first_address}");
    let transcript = Transcript::run(&mut ch05_run(&[], &common::rootfs(), &["sh", "-c", &ping]));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.command_output().contains("1 packets received"), "{transcript}");
    finish(first);
    assert_nothing_left(&first_id);
    assert_nothing_left(&common::announced_id(&transcript.output));
}

#[test]
fn a_published_port_serves_the_host_on_loopback_and_the_bridge_address() {
    let server = Server::start("hello from the container", &["-p", "18080:80"]);
    let (id, address) = (server.id.clone(), server.address);
    assert_serves(([127, 0, 0, 1], 18080).into(), "hello from the container");
    assert_serves((GATEWAY.parse::<Ipv4Addr>().unwrap(), 18080).into(), "hello from the container");

    // The map element that does it, in crabbox's table, carries the container's id.
    let map = output_of(Command::new("nft").args(["list", "map", "ip", "crabbox", "ports"]));
    let line = map.lines().find(|line| line.contains(&id)).expect("an element for it");
    // nft lists every element in one `elements = { …, … }`, a line each: this one alone.
    let element = line.trim().trim_start_matches("elements = {").trim_end_matches([',', '}']);
    let _s = settings_with_address(&address.to_string()).bind_to_scope();
    assert_snapshot!("published_element", element.trim());

    // A second container cannot take the same port.
    let second = Transcript::run(&mut ch05_run(&["-p", "18080:80"], &common::rootfs(), &["true"]));
    assert_eq!(second.status, 125, "{second}");
    assert!(second.output.contains(&format!("already published by container {id}")), "{second}");
    assert_nothing_left(&common::announced_id(&second.output));
    assert_snapshot!("port_taken", second);
    stop(server);
    assert_nothing_left(&id);
}

/// A network namespace of the checks' own, `crabbox-PURPOSE-PID` under /run/netns (what
/// `ip netns add` makes). Removed on drop, and with it every link in it.
struct Netns {
    name: String,
}

impl Netns {
    fn new(purpose: &str) -> Netns {
        let netns = Netns { name: format!("crabbox-{purpose}-{}", std::process::id()) };
        ip(&["netns", "add", &netns.name]);
        netns
    }

    /// Runs `work` on a thread of the checks that joins the namespace (setns(2) moves only
    /// the calling thread); a command that thread starts runs in the namespace too.
    fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let netns = fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                work()
            });
            thread.join().unwrap()
        })
    }

    /// `ip -n NAME ARGS…`: `ip` acting in the namespace.
    fn ip(&self, args: &[&str]) {
        ip(&[&["-n", self.name.as_str()], args].concat());
    }

    /// What a host tool prints about the namespace, like `nft list ruleset` there.
    fn output_of(&self, program: &str, args: &[&str]) -> String {
        self.run(|| output_of(Command::new(program).args(args)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// A network namespace of the checks' own that stands in for a machine outside the host:
/// a veth from the host (10.99.0.1/30) to it (10.99.0.2/30).
struct Outside {
    netns: Netns,
}

impl Outside {
    const HOST_ADDRESS: &str = "10.99.0.1";

    fn new() -> Outside {
        let pid = std::process::id();
        let netns = Netns::new("outside");
        let (host_end, peer) = (format!("cbxout{pid}"), format!("cbxoutp{pid}"));
        let veth = ["link", "add", &host_end, "type", "veth", "peer", "name", &peer];
        ip(&[&veth[..], &["netns", &netns.name]].concat());
        ip(&["addr", "add", "10.99.0.1/30", "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        netns.ip(&["addr", "add", "10.99.0.2/30", "dev", &peer]);
        netns.ip(&["link", "set", &peer, "up"]);
        Outside { netns }
    }

    /// Fetches `/` from `address`, from inside.
    fn fetch(&self, address: SocketAddr) -> Option<String> {
        self.netns.run(|| http_get(address))
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

#[test]
fn a_published_port_answers_a_client_outside_the_host() {
    let outside = Outside::new();
    let server = Server::start("hello, outside", &["-p", "18084:80"]);
    let id = server.id.clone();
    let address = SocketAddr::new(Outside::HOST_ADDRESS.parse().unwrap(), 18084);
    common::poll_until("the page to reach the outside", Duration::from_secs(10), || {
        outside.fetch(address).is_some_and(|page| page.contains("hello, outside"))
    });
    stop(server);
    assert_nothing_left(&id);
}

#[test]
fn a_port_a_host_program_listens_on_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let publish = format!("{port}:80");
    let transcript =
        Transcript::run(&mut ch05_run(&["-p", &publish], &common::rootfs(), &["true"]));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(transcript.output.contains("a program on the host uses it"), "{transcript}");
    assert_nothing_left(&common::announced_id(&transcript.output));
}

#[test]
fn with_net_none_only_lo_is_there() {
    let _s = common::settings().bind_to_scope();
    let mut ch05 = ch05_run(&["--net", "none"], &common::rootfs(), &["ip", "-o", "link"]);
    let transcript = Transcript::run(&mut ch05);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(transcript.command_output().lines().count(), 1, "{transcript}");
    assert_snapshot!("net_none", transcript);
}

#[test]
fn with_net_host_the_hosts_interfaces_are_there() {
    let host_before = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    let mut ch05 = ch05_run(&["--net", "host"], &common::rootfs(), &["cat", "/proc/net/dev"]);
    let transcript = Transcript::run(&mut ch05);
    let host_after = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(transcript.status, 0, "{transcript}");
    // Other checks add and remove their veths meanwhile: compare what stayed.
    let inside = interfaces(&transcript.command_output());
    let stayed: BTreeSet<_> = host_before.intersection(&host_after).cloned().collect();
    let seen: BTreeSet<_> = host_before.union(&host_after).cloned().collect();
    assert!(inside.is_superset(&stayed) && inside.is_subset(&seen), "{transcript}");
    assert!(inside.len() > 1, "the host has more than lo: {transcript}");
}

#[test]
fn a_container_joins_another_containers_network_namespace() {
    // The first container has a network namespace of its own with only lo (and needs no
    // bridge); the second joins it: both name the same namespace in /proc/self/ns/net.
    let script = "hostname; echo ready; cat";
    let mut ch05 = ch05_run(&["--net", "none"], &common::rootfs(), &["sh", "-c", script]);
    let first = Running::spawn(&mut ch05);
    let first_id = first.wait_for_line("ready").concat();
    let first_netns = format!("/proc/{}/ns/net", first.container_pid());
    let its_netns = fs::read_link(&first_netns).unwrap();
    let option = format!("ns:{first_netns}");
    let readlink = ["readlink", "/proc/self/ns/net"];
    let transcript =
        Transcript::run(&mut ch05_run(&["--net", &option], &common::rootfs(), &readlink));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(transcript.command_output().trim(), its_netns.to_string_lossy(), "{transcript}");
    assert_nothing_left(&common::announced_id(&transcript.output));
    finish(first);
    assert_nothing_left(&first_id);
}

#[test]
fn a_file_that_is_no_network_namespace_is_refused() {
    let _s = common::settings().bind_to_scope();
    let mut ch05 = ch05_run(&["--net", "ns:/etc/hostname"], &common::rootfs(), &["true"]);
    let transcript = Transcript::run(&mut ch05);
    assert_eq!(transcript.status, 125, "{transcript}");
    assert_snapshot!("not_a_netns", transcript);
}

#[test]
fn twenty_containers_started_together_get_twenty_addresses() {
    let containers: Vec<Running> = (0..20).map(|_| announcing(&[], "cat")).collect();
    // Every container holds its address until its stdin closes, so all 20 hold one at once.
    let announced: Vec<(String, Ipv4Addr)> = containers.iter().map(announcement).collect();
    let addresses: BTreeSet<Ipv4Addr> = announced.iter().map(|(_, address)| *address).collect();
    assert_eq!(addresses.len(), 20, "addresses given out twice: {announced:?}");
    for container in containers {
        finish(container);
    }
    for (id, _) in &announced {
        assert_nothing_left(id);
    }
}

#[test]
fn a_start_that_fails_leaves_nothing() {
    // The command is not found after the network is attached: 127, and all is undone.
    let missing = Transcript::run(&mut ch05_run(&[], &common::rootfs(), &["no-such-command"]));
    assert_eq!(missing.status, 127, "{missing}");
    assert_nothing_left(&common::announced_id(&missing.output));
}

/// What there is of crabbox's network in `netns`: crabbox0's addresses, and the ruleset.
fn network_in(netns: &Netns) -> String {
    let bridge = netns.output_of("ip", &["-o", "-4", "addr", "show", "dev", "crabbox0"]);
    let ruleset = netns.output_of("nft", &["list", "ruleset"]);
    format!("crabbox0: {bridge}\nruleset: {ruleset}")
}

/// The leases in the store for addresses in `subnet`.
fn leases_in(subnet: &str) -> Vec<String> {
    let (network, prefix) = subnet.split_once('/').unwrap();
    let (network, prefix): (Ipv4Addr, u32) = (network.parse().unwrap(), prefix.parse().unwrap());
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let inside = |line: &&str| {
        let address = line.split_whitespace().next().and_then(|a| a.parse::<Ipv4Addr>().ok());
        address.is_some_and(|address| u32::from(address) & mask == u32::from(network))
    };
    let leases = fs::read_to_string(LEASES).unwrap_or_default();
    leases.lines().filter(inside).map(String::from).collect()
}

#[test]
fn subnets_that_cannot_be_a_bridge_are_refused_before_anything_is_made() {
    // In a namespace of the check's own, so that a subnet accepted by mistake changes only
    // that namespace; the containers run `true` and send nothing.
    let netns = Netns::new("subnets");
    // A route of the "host" (the namespace) to 10.77.0.0/24, through another interface.
    netns.ip(&["link", "add", "crabboxroute", "type", "veth", "peer", "name", "crabboxpeer"]);
    netns.ip(&["addr", "add", "10.77.0.1/24", "dev", "crabboxroute"]);
    netns.ip(&["link", "set", "crabboxroute", "up"]);
    let refused = [
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/24", "multicast"),
        ("0.0.0.0/8", "\"this network\""),
        ("255.255.255.0/24", "broadcast"),
        ("10.66.0.0/31", "/8 to /30"),
        ("8.8.8.0/24", "public addresses"),
        ("10.77.0.0/16", "overlaps 10.77.0.0/24, which the host routes elsewhere"),
    ];
    let before = network_in(&netns);
    for (subnet, why) in refused {
        let mut ch05 = ch05_run(&["--subnet", subnet], &common::rootfs(), &["true"]);
        let transcript = netns.run(|| Transcript::run(&mut ch05));
        assert_ne!(transcript.status, 0, "{transcript}");
        assert!(transcript.output.contains(why), "{transcript}");
        assert_eq!(network_in(&netns), before, "{transcript}");
        assert_eq!(leases_in(subnet), Vec::<String>::new(), "{transcript}");
        if subnet == "127.0.0.0/8" {
            let _s = common::settings().bind_to_scope();
            assert_snapshot!("loopback_subnet", transcript);
        }
    }

    // A crabbox0 with another subnet is left as it is.
    netns.ip(&["link", "add", "crabbox0", "type", "bridge"]);
    netns.ip(&["addr", "add", "10.66.0.1/16", "dev", "crabbox0"]);
    let before = network_in(&netns);
    let mut ch05 = ch05_run(&["--subnet", "10.67.0.0/16"], &common::rootfs(), &["true"]);
    let transcript = netns.run(|| Transcript::run(&mut ch05));
    assert_eq!(transcript.status, 125, "{transcript}");
    let why = "has address 10.66.0.1/16, which is not the gateway of --subnet 10.67.0.0/16";
    assert!(transcript.output.contains(why), "{transcript}");
    assert_eq!(network_in(&netns), before, "{transcript}");
    assert_eq!(leases_in("10.67.0.0/16"), Vec::<String>::new(), "{transcript}");
}

#[test]
fn a_start_that_fails_late_undoes_every_step() {
    // In a namespace of the check's own, a `crabbox0` that is no bridge: the start gives it
    // the gateway's address and makes crabbox's table, takes a lease, makes the veth, and
    // fails only when it plugs the veth in (a veth takes no ports).
    let netns = Netns::new("late");
    netns.ip(&["link", "add", "crabbox0", "type", "veth", "peer", "name", "crabboxpeer"]);
    let subnet = "10.78.0.0/24";
    let before = network_in(&netns);
    let mut ch05 = ch05_run(&["--subnet", subnet, "-p", "18086:80"], &common::rootfs(), &["true"]);
    let transcript = netns.run(|| Transcript::run(&mut ch05));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(transcript.output.contains("plug cbx"), "{transcript}");
    assert_eq!(network_in(&netns), before, "{transcript}");
    assert_eq!(leases_in(subnet), Vec::<String>::new(), "{transcript}");
    let id = common::announced_id(&transcript.output);
    common::poll_until("the veth to go with its namespace", Duration::from_secs(10), || {
        !netns.output_of("ip", &["-o", "link"]).contains(&id)
    });
    assert_nothing_left(&id);
}

#[test]
fn what_a_killed_runtime_left_is_reclaimed_by_the_next_start() {
    let mut first = announcing(&["-p", "18082:80"], "cat");
    let (first_id, _) = announcement(&first);
    let container = first.container_pid();
    // SIGKILL: the runtime cannot clean up. Its container dies with it, but its lease, rule,
    // veth, files and cgroups stay.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(first.wait_for_exit(), None, "the runtime was killed");
    common::wait_until_gone("the container to die with its runtime", container);

    // Now all of it is stale: the next start removes it, and the port is free again.
    let next = Transcript::run(&mut ch05_run(&["-p", "18082:80"], &common::rootfs(), &["true"]));
    assert_eq!(next.status, 0, "{next}");
    assert_nothing_left(&first_id);
}

#[test]
fn the_iptables_firewall_publishes_ports_too() {
    let server =
        Server::start("served through iptables", &["--firewall", "iptables", "-p", "18083:80"]);
    let id = server.id.clone();
    assert_serves(([127, 0, 0, 1], 18083).into(), "served through iptables");
    let rules =
        output_of(Command::new("iptables").args(["-w", "-t", "nat", "-S", "CRABBOX-PUBLISHED"]));
    assert!(rules.contains(&format!("crabbox:{id}")), "{rules}");
    stop(server);
    assert_nothing_left(&id);
}

/// A container running busybox httpd that serves `page` at `/`, from a host folder that
/// lives as long as the server.
struct Server {
    running: Running,
    id: String,
    address: Ipv4Addr,
    _www: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `options` (the ports to publish, say). With `--init`, so that
    /// [`stop`] can end it.
    fn start(page: &str, options: &[&str]) -> Server {
        let www = common::temp_dir();
        fs::write(www.path().join("index.html"), format!("{page}\n")).unwrap();
        // On the rootfs's own /tmp, so the shared rootfs gains no mount point.
        let volume = format!("{}:/tmp", www.path().display());
        let options = [&["--init", "-v", &volume], options].concat();
        let running = announcing(&options, "exec httpd -f -p 80 -h /tmp");
        let (id, address) = announcement(&running);
        Server { running, id, address, _www: www }
    }
}

/// Stops a [`Server`]: SIGTERM to the runtime reaches httpd through the container's init,
/// and the runtime cleans up once it has ended.
fn stop(mut server: Server) {
    server.running.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.running.wait_for_exit(), Some(128 + 15), "the server ends by SIGTERM");
}

#[test]
fn the_host_looks_into_the_containers_namespace_with_nsenter() {
    let container = announcing(&[], "cat");
    let (id, address) = announcement(&container);
    let netns = format!("--net=/proc/{}/ns/net", container.container_pid());
    let mut nsenter = Command::new("nsenter");
    nsenter.args([netns.as_str(), "ip", "-br", "-4", "addr"]);
    let transcript = Transcript::run(&mut nsenter);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.command_output().contains(&format!("{address}/16")), "{transcript}");
    finish(container);
    assert_nothing_left(&id);
    let mut settings = settings_with_address(&address.to_string());
    settings.add_filter(r"/proc/\d+/", "/proc/[PID]/");
    // The peer's link index on the host side (eth0@if12) changes with every veth.
    settings.add_filter(r"eth0@if\d+ +", "eth0@if[N]       ");
    let _s = settings.bind_to_scope();
    assert_snapshot!("nsenter", transcript);
}

#[test]
fn a_container_cannot_reach_the_hosts_loopback() {
    // A service the host keeps on loopback only.
    let service = TcpListener::bind("127.0.0.2:0").unwrap();
    service.set_nonblocking(true).unwrap();
    let port = service.local_addr().unwrap().port();
    // route_localnet on crabbox0 (for published ports on 127.0.0.1) would accept what a
    // container sends to 127.0.0.2 through its gateway; crabbox's guard drops it. With
    // --init, nc is not PID 1, so timeout's SIGTERM ends it (chapter 2).
    let script = format!(
        "set -e; sysctl -w net.ipv4.conf.eth0.route_localnet=1 >/dev/null; \
         ip route del local 127.0.0.0/8 dev lo table local; \
         ip route add 127.0.0.2/32 via {GATEWAY} dev eth0; \
         echo routed through the gateway; \
         timeout 3 nc 127.0.0.2 {port} </dev/null"
    );
    let mut ch05 = ch05_run(&["--init"], &common::rootfs(), &["sh", "-c", &script]);
    let transcript = Transcript::run(&mut ch05);
    assert!(transcript.command_output().contains("routed through the gateway"), "{transcript}");
    assert_ne!(transcript.status, 0, "{transcript}");
    let accepted = service.accept();
    assert!(accepted.is_err(), "a container reached the host's 127.0.0.2: {accepted:?}");
}

#[test]
fn cleanup_removes_all_that_a_killed_runtime_left() {
    let mut running = announcing(&["-p", "18084:80"], "cat");
    let (id, _) = announcement(&running);
    let container = running.container_pid();
    running.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(running.wait_for_exit(), None, "the runtime was killed");
    common::wait_until_gone("the container to die with its runtime", container);
    let transcript = Transcript::run(common::command("ch05").arg("cleanup"));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_nothing_left(&id);
}
