//! The container's environment: an explicit list of `KEY=VALUE` strings, never the
//! runtime's own. A shell that starts the runtime holds whatever its user exported (tokens,
//! proxy passwords, SSH agent sockets); none of it is the container's business unless the
//! user passes it on with `-e`, as `docker run` works.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The `PATH` a container gets unless told otherwise: Docker's default.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the user asked for on the command line: `-e KEY=VALUE` or `-e KEY` (taken from the
/// caller), and `--env-file FILE` (one of those per line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvRequest {
    pub vars: Vec<String>,
    pub files: Vec<PathBuf>,
}

// ANCHOR: container_env
/// The container's environment, as `docker run` builds it: `PATH`, `HOSTNAME` and `HOME`,
/// `TERM` only when `terminal` names the caller's terminal type, then every variable of
/// the env files and every `-e` in order, a later one replacing an earlier one of the same
/// name. Fails, before anything is created, on a malformed variable or an unreadable file.
pub fn container_env(
    request: &EnvRequest,
    hostname: &str,
    terminal: Option<&str>,
) -> Result<Vec<String>> {
    apply_request(default_env(hostname, terminal), request)
}
// ANCHOR_END: container_env

/// What every container starts with, before its image and its user add to it.
pub fn default_env(hostname: &str, terminal: Option<&str>) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".to_string(),
    ];
    env.extend(terminal.map(|term| format!("TERM={term}")));
    env
}

/// `env` with the env files' variables and then the `-e` ones put in.
pub fn apply_request(mut env: Vec<String>, request: &EnvRequest) -> Result<Vec<String>> {
    for file in &request.files {
        for line in read_env_file(file)? {
            set_var(&mut env, &line)
                .with_context(|| format!("in the env file {}", file.display()))?;
        }
    }
    for var in &request.vars {
        set_var(&mut env, var).context("in an -e/--env option")?;
    }
    Ok(env)
}

/// The caller's terminal type, when its standard output is a terminal.
pub fn caller_terminal() -> Option<String> {
    let is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    is_terminal.then(|| std::env::var("TERM").unwrap_or_else(|_| "xterm".into()))
}

/// The value of `key` in `env`.
pub fn lookup<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|var| var.strip_prefix(key)?.strip_prefix('='))
}

/// Adds `KEY=VALUE`, or `KEY` with the caller's value (skipped when the caller has none),
/// replacing a variable of the same name.
fn set_var(env: &mut Vec<String>, spec: &str) -> Result<()> {
    match spec.split_once('=') {
        Some(_) => put_var(env, spec),
        None => {
            check_key(spec)?;
            match std::env::var(spec) {
                Ok(value) => put_var(env, &format!("{spec}={value}")),
                Err(_) => Ok(()),
            }
        }
    }
}

/// Puts `KEY=VALUE` in `env`, replacing a variable of the same name. Never takes a value
/// from the caller: an image's `Env` goes through here, and an image must not read the
/// caller's secrets by naming them.
pub fn put_var(env: &mut Vec<String>, var: &str) -> Result<()> {
    let Some((key, value)) = var.split_once('=') else {
        bail!("`{var}` is not KEY=VALUE");
    };
    check_key(key)?;
    if value.contains('\0') {
        bail!("the value of `{key}` holds a NUL byte, which no environment can carry");
    }
    match env.iter_mut().find(|old| old.split_once('=').is_some_and(|(name, _)| name == key)) {
        Some(old) => *old = var.to_string(),
        None => env.push(var.to_string()),
    }
    Ok(())
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains('\0') {
        bail!("`{key}` is not a variable name: write KEY=VALUE, or KEY to pass on the caller's");
    }
    Ok(())
}

/// The variables of an env file: one `KEY=VALUE` or `KEY` a line, the value taken as it
/// stands (no quotes are removed); blank lines and lines starting with `#` are skipped.
fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("read the env file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(vars: &[&str]) -> EnvRequest {
        EnvRequest { vars: vars.iter().map(|var| var.to_string()).collect(), files: vec![] }
    }

    #[test]
    fn the_defaults_are_docker_s() {
        let env = container_env(&EnvRequest::default(), "box", None).unwrap();
        assert_eq!(
            env,
            [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=box".into(), "HOME=/root".into()]
        );
        let env = container_env(&EnvRequest::default(), "box", Some("vt100")).unwrap();
        assert_eq!(lookup(&env, "TERM"), Some("vt100"));
    }

    #[test]
    fn a_later_variable_replaces_an_earlier_one() {
        let env = container_env(&request(&["A=1", "PATH=/bin", "A=2=3"]), "box", None).unwrap();
        assert_eq!(lookup(&env, "PATH"), Some("/bin"));
        assert_eq!(lookup(&env, "A"), Some("2=3"));
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn a_bare_name_takes_the_callers_value_or_nothing() {
        let env = container_env(&request(&["CARGO", "CRABBOX_SURELY_UNSET"]), "box", None);
        let env = env.unwrap();
        assert_eq!(lookup(&env, "CARGO"), std::env::var("CARGO").ok().as_deref());
        assert_eq!(lookup(&env, "CRABBOX_SURELY_UNSET"), None);
    }

    #[test]
    fn env_files_skip_comments_and_come_before_dash_e() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        fs::write(&file, "# a comment\n\nA=from file\n  B=\"quoted\"\n").unwrap();
        let request = EnvRequest { vars: vec!["A=from -e".into()], files: vec![file] };
        let env = container_env(&request, "box", None).unwrap();
        assert_eq!(lookup(&env, "A"), Some("from -e"));
        assert_eq!(lookup(&env, "B"), Some("\"quoted\""));
    }

    #[test]
    fn bad_variables_and_files_say_what_is_wrong() {
        let err = container_env(&request(&["=x"]), "box", None).unwrap_err();
        assert!(format!("{err:#}").contains("not a variable name"), "{err:#}");
        let err = container_env(&request(&["MY VAR=x"]), "box", None).unwrap_err();
        assert!(format!("{err:#}").contains("`MY VAR`"), "{err:#}");
        let err = container_env(&request(&["A=x\0y"]), "box", None).unwrap_err();
        assert!(format!("{err:#}").contains("NUL byte"), "{err:#}");
        let files = vec![PathBuf::from("/no/such/env")];
        let err = container_env(&EnvRequest { vars: vec![], files }, "box", None).unwrap_err();
        assert!(format!("{err:#}").contains("/no/such/env"), "{err:#}");
    }
}
