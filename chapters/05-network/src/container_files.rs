//! /etc/hosts and /etc/resolv.conf for a container on the bridge. They are written on the
//! host, under /run/crabbox/containers/<id>, and bind-mounted over the rootfs's own files,
//! as Docker does, so the image is never changed.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ch03_pivot_root::volumes::Volume;

const CONTAINERS_DIR: &str = "/run/crabbox/containers";
const FILES: [&str; 2] = ["hosts", "resolv.conf"];

fn container_dir(id: &str) -> PathBuf {
    PathBuf::from(CONTAINERS_DIR).join(id)
}

/// The bind mounts that put the files in the container.
pub fn container_file_volumes(id: &str) -> Vec<Volume> {
    FILES
        .iter()
        .map(|name| Volume {
            host: container_dir(id).join(name),
            container: PathBuf::from("/etc").join(name),
            read_only: false,
        })
        .collect()
}

pub fn write_container_files(id: &str, hostname: &str, address: Ipv4Addr) -> Result<()> {
    let dir = container_dir(id);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let contents = [hosts(hostname, address), container_resolv_conf()];
    for (name, contents) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

pub fn remove_container_files(id: &str) -> Result<()> {
    let dir = container_dir(id);
    match fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(err).with_context(|| format!("remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn hosts(hostname: &str, address: Ipv4Addr) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n"
    )
}

/// The host's resolver configuration for the container. With systemd-resolved, the host's
/// file names only its local stub; the servers behind it are in the file it keeps under
/// /run/systemd/resolve.
fn container_resolv_conf() -> String {
    let read = |path| fs::read_to_string(path).unwrap_or_default();
    let conf = resolv_conf(&read("/etc/resolv.conf"));
    if conf.lines().any(|line| line.starts_with("nameserver")) {
        return conf;
    }
    resolv_conf(&read("/run/systemd/resolve/resolv.conf"))
}

/// The host's resolver configuration without loopback name servers: 127.0.0.53
/// (systemd-resolved) answers on the host's loopback, which the container's is not.
fn resolv_conf(host: &str) -> String {
    let is_loopback_server = |line: &str| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
    };
    host.lines().filter(|line| !is_loopback_server(line)).map(|line| format!("{line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_name_servers_are_left_out() {
        let host =
            "search example.org\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver ::1\n";
        assert_eq!(resolv_conf(host), "search example.org\nnameserver 192.0.2.1\n");
    }
}
