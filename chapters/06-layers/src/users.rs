//! `User` and `-u`: a name means a line of the image's own /etc/passwd and /etc/group,
//! read by crabbox from the container's root. The host's NSS (its /etc/passwd, LDAP,
//! systemd-homed) knows nothing of the image's users, and a lookup through it would run
//! the host's libraries on the image's files.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{chdir, setgid, setgroups, setuid, Gid, Uid};
use oci_spec::runtime::User;

use crate::resolve::Root;

/// The most of /etc/passwd or /etc/group that is read: an image may make either a huge file.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary one, then every group of /etc/group that lists the
    /// user by name.
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, for `HOME` (`/` for a user it does not list).
    pub home: String,
}

/// One line of /etc/passwd (passwd(5)).
#[derive(Debug, PartialEq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of /etc/group (group(5)).
#[derive(Debug, PartialEq)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

// ANCHOR: resolve_user
/// Resolves `USER[:GROUP]` as Docker does: each part a name or a number; a name must be
/// in the image's files, a number need not be. The group defaults to the user's own (0
/// for a uid that /etc/passwd does not list).
pub fn resolve_user(root: &Root, spec: &str) -> Result<ProcessUser> {
    let accounts = parse_passwd(&read_account_file(root, "/etc/passwd")?);
    let groups = parse_group(&read_account_file(root, "/etc/group")?);
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let account = match user.parse::<u32>() {
        Ok(uid) => accounts.into_iter().find(|account| account.uid == uid).unwrap_or(Account {
            name: String::new(),
            uid,
            gid: 0,
            home: "/".into(),
        }),
        Err(_) => accounts.into_iter().find(|account| account.name == user).with_context(|| {
            format!("unable to find user {user}: no matching entries in the image's /etc/passwd")
        })?,
    };
    let gid = match group {
        None => account.gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups.iter().find(|entry| entry.name == group).map(|g| g.gid).with_context(
                || format!("unable to find group {group}: no matching entries in the image's /etc/group"),
            )?,
        },
    };
    // As Docker's: the primary group first, then every group that lists the user.
    let mut additional_gids = vec![gid];
    let listed = groups
        .iter()
        .filter(|entry| !account.name.is_empty() && entry.members.contains(&account.name));
    for extra in listed.map(|entry| entry.gid) {
        if !additional_gids.contains(&extra) {
            additional_gids.push(extra);
        }
    }
    Ok(ProcessUser { uid: account.uid, gid, additional_gids, home: account.home })
}
// ANCHOR_END: resolve_user

// ANCHOR: switch_user
/// Becomes the spec's user, as the last step before the command: the groups first, while
/// the process may still change them, then the gid, and the uid last (setuid(2) as root
/// drops the right to change the others).
pub fn switch_user(user: &User) -> Result<()> {
    let groups: Vec<Gid> =
        user.additional_gids().iter().flatten().map(|&gid| Gid::from_raw(gid)).collect();
    setgroups(&groups).context("set the supplementary groups (setgroups)")?;
    setgid(Gid::from_raw(user.gid())).with_context(|| format!("setgid {}", user.gid()))?;
    setuid(Uid::from_raw(user.uid())).with_context(|| format!("setuid {}", user.uid()))
}
// ANCHOR_END: switch_user

/// Creates the working directory when the image lacks it, as Docker does, and enters it.
/// Runs after pivot_root, so the path is the container's.
pub fn enter_working_dir(cwd: &Path) -> Result<()> {
    std::fs::create_dir_all(cwd)
        .with_context(|| format!("create the working directory {}", cwd.display()))?;
    chdir(cwd).with_context(|| format!("enter the working directory {}", cwd.display()))
}

/// The text of one of the image's account files, read inside its root; empty when the
/// image has none. Only a regular file is read (a FIFO would block, /dev/zero never end),
/// and at most [`MAX_ACCOUNT_FILE`] bytes of it.
fn read_account_file(root: &Root, path: &str) -> Result<String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = match root.open_in_root(Path::new(path), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(err) => return Err(err).with_context(|| format!("open the image's {path}")),
    };
    let stat = fstat(fd.as_fd()).with_context(|| format!("stat the image's {path}"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        bail!("the image's {path} is not a regular file");
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE)
        .read_to_string(&mut text)
        .with_context(|| format!("read the image's {path} (as UTF-8 text)"))?;
    Ok(text)
}

/// The well-formed lines of a passwd(5) file; others are skipped, as libc's parser does.
fn parse_passwd(text: &str) -> Vec<Account> {
    let account = |line: &str| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _password, uid, gid, _gecos, home, ..] = fields[..] else { return None };
        Some(Account {
            name: name.to_string(),
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            home: home.to_string(),
        })
    };
    text.lines().filter_map(account).collect()
}

/// The well-formed lines of a group(5) file.
fn parse_group(text: &str) -> Vec<Group> {
    let group = |line: &str| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _password, gid, members] = fields[..] else { return None };
        Some(Group {
            name: name.to_string(),
            gid: gid.parse().ok()?,
            members: members.split(',').filter(|m| !m.is_empty()).map(String::from).collect(),
        })
    };
    text.lines().filter_map(group).collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn image_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncrab:x:1234:1234::/home/crab:/bin/sh\nbroken\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\ncrab:x:1234:\nshell:x:99:crab,x\n")
            .unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn names_are_looked_up_in_the_image() {
        let (_dir, root) = image_root();
        let crab = resolve_user(&root, "crab").unwrap();
        assert_eq!(
            crab,
            ProcessUser {
                uid: 1234,
                gid: 1234,
                additional_gids: vec![1234, 99],
                home: "/home/crab".into()
            }
        );
        assert_eq!(resolve_user(&root, "crab:shell").unwrap().gid, 99);
        assert_eq!(resolve_user(&root, "0").unwrap().home, "/root");
        let stranger = resolve_user(&root, "4321:7").unwrap();
        assert_eq!((stranger.uid, stranger.gid, stranger.home.as_str()), (4321, 7, "/"));
    }

    #[test]
    fn unknown_names_are_refused() {
        let (_dir, root) = image_root();
        let err = resolve_user(&root, "nobody").unwrap_err().to_string();
        assert!(err.contains("unable to find user nobody"), "{err}");
        let err = resolve_user(&root, "crab:wheel").unwrap_err().to_string();
        assert!(err.contains("unable to find group wheel"), "{err}");
    }

    #[test]
    fn an_account_file_that_is_not_a_file_is_refused() {
        let (dir, root) = image_root();
        fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("etc/passwd"), Mode::S_IRWXU).unwrap();
        let err = resolve_user(&root, "crab").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
