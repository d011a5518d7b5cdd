//! Running code inside a named network namespace.
//!
//! A network namespace is a per-thread property, so the closure runs on a scoped thread that
//! first joins the namespace. Sockets created there stay in that namespace after the thread
//! ends, so a test can create a socket inside a pod and use it from the main thread.

use std::{fs::File, os::fd::AsRawFd};

/// Runs `f` on a thread that has joined the network namespace `name` (as created by
/// `ip netns add`). Panics when the namespace cannot be entered: the test cannot go on.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let path = format!("/run/netns/{name}");
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: valid fd of a network namespace file; only this thread changes.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
