//! `openmono sandbox-init`: the first process of a task container. It only waits, and
//! reaps the orphans that commands run in the container leave behind, which would
//! otherwise stay zombies (PID 1 inherits them). Teardown kills it with the container.

/// Waits forever, reaping children.
pub fn sandbox_init() -> ! {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, 0) };
        if pid <= 0 {
            // No children now (ECHILD): wait a moment before asking again.
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}
