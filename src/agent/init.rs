//! `openmono sandbox-init`: the first process of a task container. It waits, and reaps
//! the orphans that commands run in the container leave behind, which would otherwise
//! stay zombies (PID 1 inherits them). On SIGTERM (a graceful stop of the run) it passes
//! the signal on to every process in the container and exits once they are gone; the
//! engine kills what is left when the grace period ends.

use std::sync::atomic::{AtomicBool, Ordering};

static TERMINATING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATING.store(true, Ordering::SeqCst);
}

/// Makes this process and everything it starts unable to gain privileges (setuid
/// files, file capabilities). The engine sets it for a container's processes where it
/// can; a swarm service on an engine before API 1.46 cannot ask for it, so openmono's
/// processes in the box set it themselves.
pub fn no_new_privileges() {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}

/// Waits until told to stop, reaping children.
pub fn sandbox_init() -> ! {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_terminate as *const () as libc::sighandler_t,
        );
    }
    let mut forwarded = false;
    loop {
        if TERMINATING.load(Ordering::SeqCst) && !forwarded {
            // SAFETY: kill has no memory effects; -1 is every process we may signal,
            // which in the container's PID namespace is all of them but this one.
            unsafe { libc::kill(-1, libc::SIGTERM) };
            forwarded = true;
        }
        if forwarded && others_gone() {
            std::process::exit(0);
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
        if pid <= 0 {
            // Nothing to reap now: look again in a moment.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Whether this is the only process left in the container (zombies not counted).
fn others_gone() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let me = std::process::id();
    !entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        pid != me
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                    Some(state != 'Z')
                })
                .unwrap_or(false)
    })
}
