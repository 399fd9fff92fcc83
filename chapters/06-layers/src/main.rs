//! `ch06 run [OPTIONS] IMAGE [COMMAND [ARG…]]`: chapter 5's container, on an image. The
//! image's layers are stacked read-only by overlayfs under a writable layer of the
//! container's own; the image's config and the flags become an OCI runtime `Spec`, which
//! the sequence consumes. `ch06 image …` manages the store, `ps`, `diff`, `commit` and
//! `rm` the containers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ch01_chroot::env::{apply_request, caller_terminal, default_env, put_var, EnvRequest};
use ch01_chroot::process::{die_with_runtime, exit_code_for, require_root, EXIT_RUNTIME_FAILURE};
use ch01_chroot::rootfs::check_rootfs;
use ch02_namespaces::hostname::{hostname_or_id, new_container_id, set_hostname};
use ch02_namespaces::namespaces::{spawn_in_namespaces, NAMESPACES};
use ch02_namespaces::signals::{block_signals, forward_signals_until_exit, SignalMask};
use ch02_namespaces::start::start_command;
use ch03_pivot_root::filesystems::{mount_dev, mount_proc, mount_sys};
use ch03_pivot_root::mounts::{bind_mount_rootfs, make_mounts_private};
use ch03_pivot_root::pivot_root::pivot_root_into;
use ch03_pivot_root::volumes::{bind_volumes, Volume};
use ch04_cgroups::cgroups::{
    detect_setup, enter_cgroup_namespace, mount_cgroupfs, Cgroup, CgroupSetup,
};
use ch04_cgroups::cleanup::{after_cleanup, reclaim_stale_cgroups, RuntimeLock};
use ch04_cgroups::gate::Gate;
use ch04_cgroups::report::report_end;
use ch05_network::bridge::BRIDGE;
use ch05_network::leases::{Leases, LEASES_FILE};
use ch05_network::network::NetMode;
use ch05_network::network::{reclaim_stale, Network};
use ch06_layers::archive;
use ch06_layers::changes::changes;
use ch06_layers::cli::RunArgs;
use ch06_layers::container::{self, ContainerDir, ContainerRecord};
use ch06_layers::image_cli::{run_image_command, ImageCommand};
use ch06_layers::overlay::{isolate_runtime_mounts, mount_overlay, unmount_overlay, Overlay};
use ch06_layers::resolve::Root;
use ch06_layers::spec::{
    container_spec, limits_of, process_args, user_spec, volumes_of, working_dir, ContainerRequest,
    NetworkNamespace, ProcessRequest,
};
use ch06_layers::store::Store;
use ch06_layers::users::{enter_working_dir, resolve_user, switch_user, ProcessUser};
use clap::{Parser, Subcommand};
use nix::sched::CloneFlags;
use oci_spec::image::Config;
use oci_spec::runtime::Spec;

#[derive(Debug, Parser)]
#[command(name = "ch06", version, about = "Chapter 6: containers made from images")]
struct Cli {
    /// Where images, layers and containers are kept
    #[arg(long, global = true, value_name = "DIR", default_value = "/var/lib/crabbox")]
    root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND (or the image's own) in a new container made from IMAGE
    Run(Box<RunArgs>),
    /// Manage images: load, ls, inspect, rm, save, import
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// List containers: running ones, or all with -a
    Ps {
        /// Show stopped containers too
        #[arg(short, long)]
        all: bool,
    },
    /// Show what a container changed: A added, C changed, D deleted
    Diff {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Make a new image from a stopped container's changes
    Commit {
        #[arg(value_name = "ID")]
        id: String,
        #[arg(value_name = "NAME[:TAG]")]
        name: String,
    },
    /// Remove stopped containers and their writable layers
    Rm {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Remove what containers whose runtime was killed left behind
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => exit_code_for("ch06", run(&cli.root, &args)),
        Command::Image { command } => {
            exit_code_for("ch06", run_image_command(&cli.root, &command).map(|()| 0))
        }
        Command::Ps { all } => exit_code_for("ch06", ps(&cli.root, all).map(|()| 0)),
        Command::Diff { id } => exit_code_for("ch06", diff(&cli.root, &id).map(|()| 0)),
        Command::Commit { id, name } => {
            exit_code_for("ch06", commit(&cli.root, &id, &name).map(|()| 0))
        }
        Command::Rm { ids } => exit_code_for("ch06", remove(&cli.root, &ids).map(|()| 0)),
        Command::Cleanup => exit_code_for("ch06", cleanup(&cli.root).map(|()| 0)),
    }
}

/// The container's root file system, made ready before the container exists.
struct Rootfs {
    /// The overlay's mount point, or the `--rootfs` directory.
    path: PathBuf,
    /// The container's directory in the store (none for `--rootfs`).
    dir: Option<ContainerDir>,
    /// The image's config (none for `--rootfs`).
    config: Option<Config>,
}

/// Everything the child needs: the `Spec`, and what the `Spec` does not hold.
struct Container<'a> {
    spec: &'a Spec,
    id: &'a str,
    setup: CgroupSetup,
    network: &'a Network,
    init: bool,
}

// ANCHOR: sequence
fn run(store: &Path, args: &RunArgs) -> Result<u8> {
    require_root("ch06")?;
    let limits = args.limits.limits();
    for warning in limits.check()? {
        eprintln!("ch06: warning: {warning}");
    }
    let network = args.network.network()?;
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.process.hostname.as_deref(), &id)?;
    eprintln!("ch06: container {id}");
    isolate_runtime_mounts()?;
    let _lock = RuntimeLock::take(&id)?;
    let rootfs = prepare_rootfs(store, args, &id)?;
    let spec = describe_container(args, &rootfs, &id, &hostname);
    // A container that could not even be described never existed: it goes, as with --rm.
    let remove = args.rm || args.print_spec || spec.is_err();
    let status = spec.and_then(|spec| match args.print_spec {
        true => print_spec(&spec),
        false => run_container(&spec, &id, &network, args),
    });
    finish(rootfs, status, remove)
}

/// The image's layers under a new writable layer, mounted; or the `--rootfs` directory.
fn prepare_rootfs(store: &Path, args: &RunArgs, id: &str) -> Result<Rootfs> {
    let (image, command) = args.image_and_command();
    let Some(image) = image else {
        let path = check_rootfs(args.rootfs.as_deref().expect("no image means --rootfs"))?;
        return Ok(Rootfs { path, dir: None, config: None });
    };
    let (dir, lowers, config) = create_container(store, image, id, command, args.rm)?;
    let overlay = Overlay { lowers: &lowers, upper: &dir.upper(), work: &dir.work() };
    if let Err(err) = mount_overlay(&overlay, &dir.merged()) {
        return after_cleanup(Err(err), dir.remove(), "removing the container");
    }
    Ok(Rootfs { path: dir.merged(), dir: Some(dir), config })
}

/// The container's `Spec`: the image's config, then the flags.
fn describe_container(args: &RunArgs, rootfs: &Rootfs, id: &str, hostname: &str) -> Result<Spec> {
    let config = rootfs.config.as_ref();
    let (_, command) = args.image_and_command();
    let process = ProcessRequest {
        command,
        entrypoint: args.entrypoint.as_deref(),
        workdir: args.workdir.as_deref(),
    };
    let user = resolve_user(&Root::open(&rootfs.path)?, user_spec(config, args.user.as_deref()))?;
    let env = container_env(config, &user, hostname, &args.env.env_request())?;
    container_spec(&ContainerRequest {
        args: process_args(config, &process)?,
        env,
        cwd: working_dir(config, &process)?,
        user,
        hostname,
        root: &rootfs.path,
        read_only: args.mounts.read_only,
        volumes: &args.mounts.volumes,
        limits: &args.limits.limits(),
        network: network_namespace(&args.network.net),
        cgroups_path: PathBuf::from("crabbox").join(id),
    })
}

fn run_container(spec: &Spec, id: &str, network: &Network, args: &RunArgs) -> Result<u8> {
    let setup = detect_setup()?;
    if let Err(err) = reclaim_stale_cgroups(setup) {
        eprintln!("ch06: warning: {err:#}");
    }
    let container = Container { spec, id, setup, network, init: args.process.init };
    let mask = block_signals()?;
    let limits = limits_of(spec);
    let cgroup = Cgroup::create(setup, id, &limits)?;
    let status = run_in_cgroup(&container, &cgroup, &mask);
    if let Err(err) = report_end("ch06", &cgroup, limits.memory, args.limits.stats) {
        eprintln!("ch06: warning: {err:#}");
    }
    after_cleanup(status, cgroup.remove(), "removing the container's cgroup")
}

fn run_in_cgroup(container: &Container, cgroup: &Cgroup, mask: &SignalMask) -> Result<u8> {
    let gate = Gate::new()?;
    let namespaces = NAMESPACES | CloneFlags::CLONE_NEWNS | container.network.namespace();
    let child = spawn_in_namespaces(namespaces, || child_setup(container, &gate, mask))?;
    cgroup.add_pid(child)?;
    let hostname = container.spec.hostname().as_deref().unwrap_or(container.id);
    let mut attachment = container.network.attach(container.id, hostname, child)?;
    if let Some(address) = attachment.address {
        eprintln!("ch06: address {address} on {BRIDGE}");
    }
    gate.open()?;
    let status = forward_signals_until_exit(child);
    after_cleanup(status, attachment.detach(), "detaching the network")
}

/// Runs in the child, PID 1 of the new PID namespace.
fn child_setup(container: &Container, gate: &Gate, mask: &SignalMask) -> u8 {
    let ready = die_with_runtime().and_then(|()| gate.wait());
    if ready.is_err() {
        return EXIT_RUNTIME_FAILURE;
    }
    let process = container.spec.process().as_ref().expect("the spec has a process");
    let started = set_up_container(container).and_then(|()| switch_user(process.user()));
    if let Err(err) = started {
        eprintln!("ch06: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let args = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    let report = |why: &dyn std::fmt::Display| eprintln!("ch06: {why}");
    start_command(args, env, container.init, mask, &report)
}

fn set_up_container(container: &Container) -> Result<()> {
    let spec = container.spec;
    let root = spec.root().as_ref().expect("the spec has a root");
    let rootfs = root.path().as_path();
    container.network.enter()?;
    enter_cgroup_namespace()?;
    set_hostname(spec.hostname().as_deref().unwrap_or(container.id))?;
    make_mounts_private()?;
    bind_mount_rootfs(rootfs)?;
    let mut volumes = volumes_of(spec);
    volumes.extend(container.network.volumes(container.id));
    let volumes: Vec<&Volume> = volumes.iter().collect();
    let read_only = root.readonly().unwrap_or(false);
    bind_volumes(rootfs, &volumes, read_only, &Root::open(rootfs)?)?;
    pivot_root_into(rootfs)?;
    mount_proc()?;
    mount_sys()?;
    mount_cgroupfs(container.setup)?;
    mount_dev()?;
    enter_working_dir(spec.process().as_ref().expect("the spec has a process").cwd())
}
// ANCHOR_END: sequence

/// Takes the image's layers from the store (unpacking those not unpacked yet) and
/// creates the container's directory, under the store's lock: an `image rm` in between
/// would remove the layers.
fn create_container(
    store: &Path,
    image: &str,
    id: &str,
    command: &[String],
    auto_remove: bool,
) -> Result<(ContainerDir, Vec<PathBuf>, Option<Config>)> {
    let store = Store::open(store)?;
    let _lock = store.lock()?;
    let found = store.image(image)?;
    let layers = found.layers()?;
    let lowers = store.unpack_layers(&layers)?;
    let record = ContainerRecord {
        id: id.to_string(),
        image: image.to_string(),
        image_id: found.id.to_string(),
        lowers: lowers.clone(),
        command: command.to_vec(),
        created: container::now(),
        auto_remove,
        exit_code: None,
    };
    let dir = ContainerDir::create(&store.containers_dir(), &record)?;
    Ok((dir, lowers, found.config.config().clone()))
}

/// The environment as Docker builds it: the defaults, the user's `HOME`, the image's
/// `Env`, then `--env-file` and `-e`.
fn container_env(
    config: Option<&Config>,
    user: &ProcessUser,
    hostname: &str,
    request: &EnvRequest,
) -> Result<Vec<String>> {
    let mut env = default_env(hostname, caller_terminal().as_deref());
    put_var(&mut env, &format!("HOME={}", user.home))?;
    for var in config.and_then(|config| config.env().as_deref()).unwrap_or_default() {
        put_var(&mut env, var).context("in the image's Env")?;
    }
    apply_request(env, request)
}

fn network_namespace(mode: &NetMode) -> NetworkNamespace {
    match mode {
        NetMode::Bridge | NetMode::None => NetworkNamespace::New,
        NetMode::Host => NetworkNamespace::Host,
        NetMode::Join(path) => NetworkNamespace::Join(path.clone()),
    }
}

fn print_spec(spec: &Spec) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(spec).context("write the spec as JSON")?);
    Ok(0)
}

/// Unmounts the overlay and removes the container (`--rm`), or records how it ended.
fn finish(rootfs: Rootfs, status: Result<u8>, remove: bool) -> Result<u8> {
    let Some(dir) = rootfs.dir else { return status };
    let unmounted = unmount_overlay(&rootfs.path);
    let status = after_cleanup(status, unmounted, "unmounting the container's layers");
    if remove {
        return after_cleanup(status, dir.remove(), "removing the container");
    }
    let recorded = dir.read().and_then(|mut record| {
        record.exit_code = status.as_ref().ok().copied();
        dir.write(&record)
    });
    after_cleanup(status, recorded, "recording the container's exit")
}

// ANCHOR: ps
/// Lists containers as `docker ps` does: running ones, or all of them.
fn ps(store: &Path, all: bool) -> Result<()> {
    let containers = Store::open(store)?.containers_dir();
    println!("{:<14}{:<20}{:<24}{:<18}STATUS", "CONTAINER ID", "IMAGE", "COMMAND", "CREATED");
    for id in container::list_ids(&containers)? {
        let record = ContainerDir::find(&containers, &id)?.read()?;
        let status = match (container::is_running(&id)?, record.exit_code) {
            (true, _) => "Up".to_string(),
            (false, Some(code)) => format!("Exited ({code})"),
            (false, None) => "Dead (its runtime was killed)".to_string(),
        };
        if all || status == "Up" {
            let command = format!("\"{}\"", shortened(&record.command.join(" ")));
            let created = container::ago(record.created);
            println!("{:<14}{:<20}{command:<24}{created:<18}{status}", id, record.image);
        }
    }
    Ok(())
}
// ANCHOR_END: ps

/// A command cut to 20 characters, as `docker ps` shows it.
fn shortened(command: &str) -> String {
    match command.char_indices().nth(19) {
        Some((end, _)) => format!("{}…", &command[..end]),
        None => command.to_string(),
    }
}

// ANCHOR: diff
/// Prints what the container changed, as `docker diff` does.
fn diff(store: &Path, id: &str) -> Result<()> {
    let dir = ContainerDir::find(&Store::open(store)?.containers_dir(), id)?;
    let record = dir.read()?;
    for change in changes(&dir.upper(), &record.lowers)? {
        println!("{change}");
    }
    Ok(())
}
// ANCHOR_END: diff

/// Makes the image `name` from the container `id`'s writable layer, as `docker commit`.
fn commit(root: &Path, id: &str, name: &str) -> Result<()> {
    require_root("ch06")?;
    let store = Store::open(root)?;
    let dir = ContainerDir::find(&store.containers_dir(), id)?;
    let record = dir.read()?;
    if container::is_running(&record.id)? {
        bail!("container {} is running; commit it once it has stopped", record.id);
    }
    let _lock = store.lock()?;
    let image = archive::commit(&store, &dir, &record, name)?;
    println!("{}", image.id);
    Ok(())
}

/// Removes stopped containers: their writable layers and records.
fn remove(store: &Path, ids: &[String]) -> Result<()> {
    require_root("ch06")?;
    let containers = Store::open(store)?.containers_dir();
    for id in ids {
        let dir = ContainerDir::find(&containers, id)?;
        let record = dir.read()?;
        if container::is_running(&record.id)? {
            bail!("container {} is running; stop it before removing it", record.id);
        }
        dir.remove()?;
        println!("{}", record.id);
    }
    Ok(())
}

/// Removes what runtimes that were killed left: cgroups and network (as chapter 5), and
/// the containers that were to be removed at exit (`--rm`).
fn cleanup(store: &Path) -> Result<()> {
    require_root("ch06")?;
    let containers = Store::open(store)?.containers_dir();
    let mut removed = 0;
    for id in container::list_ids(&containers)? {
        let dir = ContainerDir::find(&containers, &id)?;
        let abandoned = !container::is_running(&id)?;
        if abandoned && dir.read().is_ok_and(|record| record.auto_remove) {
            dir.remove()?;
            removed += 1;
        }
    }
    reclaim_stale(&mut Leases::lock(Path::new(LEASES_FILE))?, None)?;
    let reclaimed = reclaim_stale_cgroups(detect_setup()?)?;
    eprintln!(
        "ch06: removed {removed} --rm containers and the cgroups of {} stale containers",
        reclaimed.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
