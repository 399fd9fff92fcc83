//! The container described as an OCI runtime-spec `Spec`: what `docker run` hands runc as
//! `config.json`. The image's config and the command line become one `Spec` here, and the
//! run sequence reads the container from it, as chapter 9's runtime reads a bundle.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ch03_pivot_root::volumes::Volume;
use ch04_cgroups::cgroups::v1::cpu_shares;
use ch04_cgroups::limits::{CpuQuota, Limits};
use oci_spec::image::Config;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::users::ProcessUser;

/// The runtime-spec version the `Spec` follows.
const OCI_VERSION: &str = "1.2.0";

/// What the command line says about the process, before the image's config fills the gaps.
#[derive(Debug, Default)]
pub struct ProcessRequest<'a> {
    /// COMMAND [ARG…] after the image; empty for the image's `Cmd`.
    pub command: &'a [String],
    /// `--entrypoint`: replaces the image's `Entrypoint` (and drops its `Cmd`); `""` clears it.
    pub entrypoint: Option<&'a str>,
    /// `-w`: replaces the image's `WorkingDir`.
    pub workdir: Option<&'a str>,
}

// ANCHOR: process_args
/// The command as Docker derives it: `Entrypoint` then `Cmd`, where COMMAND replaces `Cmd`
/// and `--entrypoint` replaces `Entrypoint` and drops the image's `Cmd` (it belonged to
/// the old entrypoint).
pub fn process_args(config: Option<&Config>, request: &ProcessRequest) -> Result<Vec<String>> {
    let image_entrypoint = config.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let args = command_line(image_entrypoint, image_cmd, request);
    if args.is_empty() {
        bail!("no command given, and the image has neither Entrypoint nor Cmd: name one");
    }
    Ok(args)
}

fn command_line(
    image_entrypoint: Vec<String>,
    image_cmd: Vec<String>,
    request: &ProcessRequest,
) -> Vec<String> {
    // EXERCISE 6.3: combine the image's Entrypoint and Cmd with --entrypoint and COMMAND as docker run does
    // See the Dockerfile reference, "Understand how CMD and ENTRYPOINT interact", and
    // docker run's --entrypoint: it resets the image's CMD.
    let (entrypoint, default_cmd) = match request.entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(entrypoint) => (vec![entrypoint.to_string()], Vec::new()),
        None => (image_entrypoint, image_cmd),
    };
    let cmd = if request.command.is_empty() { default_cmd } else { request.command.to_vec() };
    entrypoint.into_iter().chain(cmd).collect()
    // END EXERCISE
}
// ANCHOR_END: process_args

/// The working directory: `-w`, else the image's `WorkingDir`, else `/`. It must be
/// absolute, as Docker requires.
pub fn working_dir(config: Option<&Config>, request: &ProcessRequest) -> Result<PathBuf> {
    let image = config.and_then(|c| c.working_dir().clone()).filter(|dir| !dir.is_empty());
    let dir = PathBuf::from(request.workdir.map(String::from).or(image).unwrap_or("/".into()));
    if !dir.is_absolute() {
        bail!("the working directory `{}` must be an absolute path", dir.display());
    }
    Ok(dir)
}

/// The user: `-u`, else the image's `User`, else root.
pub fn user_spec<'a>(config: Option<&'a Config>, user: Option<&'a str>) -> &'a str {
    let image = config.and_then(|c| c.user().as_deref()).filter(|user| !user.is_empty());
    user.or(image).unwrap_or("0")
}

/// The network namespace the container is given.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkNamespace {
    /// A new one (the bridge, or `none`).
    New,
    /// The host's (`--net host`): no network namespace entry at all.
    Host,
    /// An existing one (`--net ns:PATH`).
    Join(PathBuf),
}

/// Everything the `Spec` is made of, as plain values.
#[derive(Debug)]
pub struct ContainerRequest<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub user: ProcessUser,
    pub hostname: &'a str,
    pub root: &'a Path,
    pub read_only: bool,
    pub volumes: &'a [Volume],
    pub limits: &'a Limits,
    pub network: NetworkNamespace,
    pub cgroups_path: PathBuf,
}

// ANCHOR: container_spec
/// The `Spec` of a container.
pub fn container_spec(request: &ContainerRequest) -> Result<Spec> {
    let user = UserBuilder::default()
        .uid(request.user.uid)
        .gid(request.user.gid)
        .additional_gids(request.user.additional_gids.clone())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(request.args.clone())
        .env(request.env.clone())
        .cwd(request.cwd.clone())
        .build()?;
    // oci-spec's defaults are runc's hardening: a few capabilities, an rlimit,
    // no_new_privs, masked and read-only paths. This container has none of that yet
    // (chapter 8 adds it), and the Spec says what runs.
    process.set_capabilities(None);
    process.set_rlimits(None);
    process.set_no_new_privileges(None);
    let root = RootBuilder::default()
        .path(request.root.to_path_buf())
        .readonly(request.read_only)
        .build()?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(&request.network)?)
        .resources(resources(request.limits)?)
        .cgroups_path(request.cgroups_path.clone())
        .build()?;
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    let mut mounts = standard_mounts()?;
    for volume in request.volumes {
        mounts.push(bind_mount(volume)?);
    }
    let spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .process(process)
        .root(root)
        .hostname(request.hostname)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    Ok(spec)
}
// ANCHOR_END: container_spec

fn namespaces(network: &NetworkNamespace) -> Result<Vec<oci_spec::runtime::LinuxNamespace>> {
    let new = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let mut namespaces = vec![
        new(LinuxNamespaceType::Pid)?,
        new(LinuxNamespaceType::Uts)?,
        new(LinuxNamespaceType::Ipc)?,
        new(LinuxNamespaceType::Mount)?,
        new(LinuxNamespaceType::Cgroup)?,
    ];
    match network {
        NetworkNamespace::New => namespaces.push(new(LinuxNamespaceType::Network)?),
        NetworkNamespace::Host => {}
        NetworkNamespace::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }
    Ok(namespaces)
}

/// The file systems every container gets (chapters 3 and 4 mount them), in the order the
/// run sequence mounts them.
fn standard_mounts() -> Result<Vec<Mount>> {
    let mount = |destination: &str, typ: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(typ)
            .options(options.iter().map(|option| option.to_string()).collect::<Vec<_>>())
            .build()
    };
    Ok(vec![
        mount("/proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/dev", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
    ])
}

fn bind_mount(volume: &Volume) -> Result<Mount> {
    let mode = if volume.read_only { "ro" } else { "rw" };
    Ok(MountBuilder::default()
        .destination(volume.container.clone())
        .typ("bind")
        .source(volume.host.clone())
        .options(vec!["rbind".to_string(), mode.to_string()])
        .build()?)
}

/// The limits in the spec's terms. `--cpu-weight` (cgroup v2's `cpu.weight`) becomes the
/// spec's `shares`, as v1 counts it; [`limits_of`] turns it back.
fn resources(limits: &Limits) -> Result<LinuxResources> {
    let to_i64 = |bytes: u64| i64::try_from(bytes).context("a limit beyond i64");
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(bytes) = limits.memory {
        memory = memory.limit(to_i64(bytes)?);
    }
    if let Some(bytes) = limits.memory_swap {
        memory = memory.swap(to_i64(bytes)?);
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(quota) = limits.cpu {
        cpu = cpu.quota(to_i64(quota.quota_us)?).period(quota.period_us);
    }
    if let Some(weight) = limits.cpu_weight {
        cpu = cpu.shares(cpu_shares(weight));
    }
    let mut resources = LinuxResourcesBuilder::default().memory(memory.build()?).cpu(cpu.build()?);
    if let Some(pids) = limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(to_i64(pids)?).build()?);
    }
    Ok(resources.build()?)
}

/// The limits that a `Spec`'s resources set.
pub fn limits_of(spec: &Spec) -> Limits {
    let Some(resources) = spec.linux().as_ref().and_then(|linux| linux.resources().as_ref()) else {
        return Limits::default();
    };
    let memory = resources.memory().as_ref();
    let cpu = resources.cpu().as_ref();
    let positive = |value: Option<i64>| value.and_then(|value| u64::try_from(value).ok());
    Limits {
        memory: positive(memory.and_then(|memory| memory.limit())),
        memory_swap: positive(memory.and_then(|memory| memory.swap())),
        cpu: cpu.and_then(|cpu| {
            Some(CpuQuota { quota_us: positive(cpu.quota())?, period_us: cpu.period()? })
        }),
        // ch04's cpu_shares rounds down: rounding up here gives the weight back.
        cpu_weight: cpu.and_then(|cpu| cpu.shares()).map(|shares| (shares * 100).div_ceil(1024)),
        pids: positive(resources.pids().as_ref().map(|pids| pids.limit())),
    }
}

/// The volumes of a `Spec`: its bind mounts.
pub fn volumes_of(spec: &Spec) -> Vec<Volume> {
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    mounts
        .iter()
        .filter(|mount| mount.typ().as_deref() == Some("bind"))
        .filter_map(|mount| {
            let options = mount.options().as_deref().unwrap_or_default();
            Some(Volume {
                host: mount.source().clone()?,
                container: mount.destination().clone(),
                read_only: options.iter().any(|option| option == "ro"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ConfigBuilder;

    use super::*;

    fn config() -> Config {
        ConfigBuilder::default()
            .entrypoint(vec!["/bin/echo".to_string(), "entry".to_string()])
            .cmd(vec!["default".to_string()])
            .working_dir("/home/crab")
            .build()
            .unwrap()
    }

    fn args(command: &[&str], entrypoint: Option<&str>) -> Vec<String> {
        let command: Vec<String> = command.iter().map(|arg| arg.to_string()).collect();
        let request = ProcessRequest { command: &command, entrypoint, workdir: None };
        process_args(Some(&config()), &request).unwrap()
    }

    #[test]
    fn command_replaces_cmd_and_entrypoint_replaces_both() {
        assert_eq!(args(&[], None), ["/bin/echo", "entry", "default"]);
        assert_eq!(args(&["mine"], None), ["/bin/echo", "entry", "mine"]);
        assert_eq!(args(&["ls", "/"], Some("")), ["ls", "/"]);
        assert_eq!(args(&[], Some("/bin/true")), ["/bin/true"]);
        assert_eq!(args(&["-l"], Some("/bin/ls")), ["/bin/ls", "-l"]);
    }

    #[test]
    fn no_command_at_all_is_refused() {
        let err = process_args(None, &ProcessRequest::default()).unwrap_err();
        assert!(err.to_string().contains("no command given"), "{err}");
    }

    #[test]
    fn the_working_dir_must_be_absolute() {
        let request = ProcessRequest { workdir: Some("tmp"), ..ProcessRequest::default() };
        assert!(working_dir(Some(&config()), &request).is_err());
        let request = ProcessRequest::default();
        assert_eq!(working_dir(Some(&config()), &request).unwrap(), Path::new("/home/crab"));
        assert_eq!(working_dir(None, &request).unwrap(), Path::new("/"));
    }

    #[test]
    fn limits_and_volumes_come_back_out_of_the_spec() {
        let limits = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            cpu: Some(CpuQuota { quota_us: 50_000, period_us: 100_000 }),
            cpu_weight: Some(33),
            pids: Some(20),
        };
        let volumes = [Volume { host: "/srv".into(), container: "/data".into(), read_only: true }];
        let request = ContainerRequest {
            args: vec!["sh".into()],
            env: vec![],
            cwd: "/".into(),
            user: ProcessUser { uid: 0, gid: 0, additional_gids: vec![], home: "/root".into() },
            hostname: "box",
            root: Path::new("/r"),
            read_only: false,
            volumes: &volumes,
            limits: &limits,
            network: NetworkNamespace::New,
            cgroups_path: "crabbox/box".into(),
        };
        let spec = container_spec(&request).unwrap();
        assert_eq!(limits_of(&spec), limits);
        assert_eq!(volumes_of(&spec), volumes);
    }
}
