//! An engine over ssh (`ssh://[USER@]HOST[:PORT]`), reached as the docker CLI reaches
//! one: each connection is an `ssh HOST -- docker system dial-stdio` process, whose
//! stdin and stdout carry the engine's API. bollard speaks to a Unix socket of this
//! process, in a folder only this user can enter, and each connection to it is piped to
//! a new such `ssh`. ssh runs with `BatchMode=yes` (it never asks for a password or
//! about an unknown host key: it fails, and says why) and in its own process group, so
//! that the Ctrl-C that asks for a teardown does not cut the connection it needs.
//!
//! A run makes many calls at once, each on a connection of its own. sshd drops new
//! connections while too many are still being set up (`MaxStartups`, 10 by default),
//! so at most [`HANDSHAKES`] ssh processes of this openmono (all its runs together) are
//! connecting at a time: the others wait until one has its first answer from the
//! engine, or has been at it for [`HANDSHAKE_TIME`] (set up by then, most likely, and
//! perhaps sending a large request). Connections that are set up do not count, so
//! nothing waits on an idle one.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    process::Command,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::lock;

/// The ssh command when `OPENMONO_SSH` does not name another (`ssh -F FILE`, say).
const SSH: &str = "ssh";

/// How many ssh processes of this openmono may be connecting at the same time, all
/// engines and runs (a matrix) together: well under sshd's default `MaxStartups` of 10.
const HANDSHAKES: usize = 4;

/// How long a connection counts as connecting, at most.
const HANDSHAKE_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The permits for [`HANDSHAKES`].
static CONNECTING: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(HANDSHAKES)));

/// A local socket that leads to an engine over ssh; gone when dropped.
pub struct SshBridge {
    /// `unix:///…`, for bollard.
    pub socket: String,
    dir: PathBuf,
    accepting: tokio::task::JoinHandle<()>,
    /// The last line an `ssh` wrote to stderr: why a connection failed.
    last_error: Arc<Mutex<String>>,
}

impl SshBridge {
    /// Listens on a new socket and, for each connection, runs ssh to `url`'s host.
    /// `ssh` is the command (`OPENMONO_SSH`, split on spaces), if not `ssh`.
    pub fn start(url: &str, ssh: Option<&str>) -> std::io::Result<Self> {
        let command = ssh_command(url, ssh.unwrap_or(SSH));
        let dir = private_dir()?;
        let path = dir.join("engine.sock");
        let listener = UnixListener::bind(&path)?;
        let last_error = Arc::new(Mutex::new(String::new()));
        let errors = Arc::clone(&last_error);
        let handshakes = Arc::clone(&CONNECTING);
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let command = command.clone();
                let errors = Arc::clone(&errors);
                let handshakes = Arc::clone(&handshakes);
                tokio::spawn(async move {
                    if let Ok(permit) = handshakes.acquire_owned().await {
                        pipe(stream, &command, &errors, permit).await;
                    }
                });
            }
        });
        Ok(Self {
            socket: format!("unix://{}", path.display()),
            dir,
            accepting,
            last_error,
        })
    }

    /// What ssh last said on stderr, if anything: why the engine cannot be reached.
    pub fn last_error(&self) -> Option<String> {
        Some(lock(&self.last_error).clone()).filter(|e| !e.is_empty())
    }
}

impl Drop for SshBridge {
    fn drop(&mut self) {
        self.accepting.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where an `ssh://` URL leads.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'u> {
    pub host: &'u str,
    pub port: Option<u16>,
    pub user: Option<&'u str>,
}

/// Reads `ssh://[USER@]HOST[:PORT]` (an IPv6 address in brackets); `Err` says what is
/// wrong with it. A path, query or fragment means nothing to `dial-stdio`: refused, as
/// the docker CLI refuses them.
pub fn parse(url: &str) -> Result<Target<'_>, String> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| "it does not start with ssh://".to_owned())?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("it has a path, query or fragment after the host".to_owned());
    }
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) if !user.is_empty() => (Some(user), host),
        Some(_) => return Err("the user before `@` is empty".to_owned()),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "an IPv6 address is missing its `]`".to_owned())?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("`{after}` after the address is not a port")),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.starts_with('-') {
        return Err("it names no host".to_owned());
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("`{p}` is not a port (1 to 65535)"))
        })
        .transpose()?;
    Ok(Target { host, port, user })
}

/// The argv that reaches the engine of `url` (`ssh://[USER@]HOST[:PORT]`) with `ssh`.
fn ssh_command(url: &str, ssh: &str) -> Vec<String> {
    let Target { host, port, user } = parse(url).unwrap_or(Target {
        host: url,
        port: None,
        user: None,
    });
    let port = port.map(|p| p.to_string());
    let mut argv: Vec<String> = ssh.split_whitespace().map(str::to_owned).collect();
    // An empty OPENMONO_SSH is no command: ssh itself.
    if argv.is_empty() {
        argv.push(SSH.to_owned());
    }
    argv.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"].map(str::to_owned));
    if let Some(user) = user {
        argv.extend(["-l".to_owned(), user.to_owned()]);
    }
    if let Some(port) = port {
        argv.extend(["-p".to_owned(), port]);
    }
    argv.extend(
        ["--", host, "docker", "system", "dial-stdio"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    argv
}

/// A new folder under the temporary folder that only this user can enter.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("openmono-ssh-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// One connection: an ssh process whose stdin and stdout carry it both ways; its
/// stderr lines are kept in `errors`. `handshake` is given back with the engine's first
/// bytes (or when ssh ends).
async fn pipe(
    stream: tokio::net::UnixStream,
    command: &[String],
    errors: &Mutex<String>,
    handshake: OwnedSemaphorePermit,
) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            *lock(errors) = format!("cannot run `{program}`: {e}");
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    let said = async {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() {
                *lock(errors) = line;
            }
        }
    };
    let (mut from_client, mut to_client) = stream.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
        // The client is done: ssh passes the end on, and the engine closes its side.
        drop(stdin);
    };
    let handshake = Arc::new(Mutex::new(Some(handshake)));
    let done_connecting = {
        let handshake = Arc::clone(&handshake);
        tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_TIME).await;
            lock(&handshake).take();
        })
    };
    let down = async {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = stdout.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            lock(&handshake).take();
            if to_client.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        lock(&handshake).take();
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down, said);
    done_connecting.abort();
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_becomes_ssh_options_and_dial_stdio() {
        assert_eq!(
            ssh_command("ssh://me@gpu-box:2222", "ssh"),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-l",
                "me",
                "-p",
                "2222",
                "--",
                "gpu-box",
                "docker",
                "system",
                "dial-stdio"
            ]
        );
        assert_eq!(
            ssh_command("ssh://gpu-box", "ssh -F /etc/work.conf")[..3],
            ["ssh", "-F", "/etc/work.conf"]
        );
        let plain = ssh_command("ssh://gpu-box", "ssh");
        assert!(!plain.contains(&"-l".to_owned()) && !plain.contains(&"-p".to_owned()));
        assert_eq!(plain[plain.len() - 4], "gpu-box");
        assert_eq!(ssh_command("ssh://gpu-box", " ")[0], "ssh");
    }

    #[test]
    fn only_user_host_and_port_make_an_ssh_url() {
        assert_eq!(
            parse("ssh://me@[::1]:2222/"),
            Ok(Target {
                host: "::1",
                port: Some(2222),
                user: Some("me"),
            })
        );
        assert_eq!(
            parse("ssh://box"),
            Ok(Target {
                host: "box",
                port: None,
                user: None,
            })
        );
        for (url, why) in [
            ("ssh://me@box:99999", "`99999` is not a port (1 to 65535)"),
            ("ssh://box:0", "`0` is not a port (1 to 65535)"),
            (
                "ssh://box/path",
                "it has a path, query or fragment after the host",
            ),
            (
                "ssh://box?x=1",
                "it has a path, query or fragment after the host",
            ),
            ("ssh://@box", "the user before `@` is empty"),
            ("ssh://me@", "it names no host"),
            ("ssh://-oProxyCommand=x", "it names no host"),
            ("ssh://[::1", "an IPv6 address is missing its `]`"),
        ] {
            assert_eq!(parse(url), Err(why.to_owned()), "{url}");
        }
    }
}
