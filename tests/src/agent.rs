//! The real `zonewall agent --standalone` as a child process in a node namespace: built on
//! demand, started, waited for ("policy live"), its output followed line by line, stopped with
//! SIGTERM.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

/// Builds the `zonewall` binary (the test crate does not build it) and returns its path.
pub fn zonewall_binary() -> PathBuf {
    let workspace = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "zonewall", "--bin", "zonewall"])
        .current_dir(&workspace)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p zonewall failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug/zonewall")
}

/// A line the agent wrote, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout(String),
    Stderr(String),
}

pub struct Agent {
    child: Child,
    pub output: Receiver<Output>,
    /// Everything read from `output` while waiting for the agent to come up.
    pub startup_log: Vec<String>,
}

impl Agent {
    /// Starts `zonewall agent --standalone --inventory INVENTORY --bpffs-root PIN_ROOT` plus
    /// `args` inside `netns` and waits up to 30 s for "policy live". Panics (with the agent's
    /// log) otherwise.
    pub fn start(
        binary: &Path,
        netns: &str,
        pin_root: &Path,
        inventory: &Path,
        args: &[String],
    ) -> Agent {
        let mut agent = Agent::spawn(binary, netns, pin_root, inventory, args);
        agent.wait_live();
        agent
    }

    /// Starts the agent without waiting for it.
    pub fn spawn(
        binary: &Path,
        netns: &str,
        pin_root: &Path,
        inventory: &Path,
        args: &[String],
    ) -> Agent {
        // nsenter switches only the network namespace: `ip netns exec` would also mount a
        // fresh /sys, hiding the bpffs at /sys/fs/bpf where the agent pins.
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("--")
            .arg(binary)
            .args(["agent", "--standalone", "--inventory"])
            .arg(inventory)
            .arg("--bpffs-root")
            .arg(pin_root.join("zonewall"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let (sender, output) = mpsc::channel();
        let stdout = child.stdout.take().expect("agent stdout");
        let stderr = child.stderr.take().expect("agent stderr");
        let to_stdout = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = to_stdout.send(Output::Stdout(line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(Output::Stderr(line));
            }
        });
        Agent {
            child,
            output,
            startup_log: Vec::new(),
        }
    }

    /// Waits up to 30 s for "policy live"; panics with the agent's log otherwise.
    pub fn wait_live(&mut self) {
        let agent = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match agent.output.recv_timeout(Duration::from_millis(200)) {
                Ok(Output::Stderr(line)) => {
                    let live = line.contains("policy live");
                    agent.startup_log.push(line);
                    if live {
                        return;
                    }
                }
                Ok(Output::Stdout(line)) => agent.startup_log.push(line),
                Err(_) => {
                    if let Ok(Some(status)) = agent.child.try_wait() {
                        panic!(
                            "the agent exited ({status}) before its policy was live:\n{}",
                            agent.startup_log.join("\n")
                        );
                    }
                }
            }
        }
        let _ = agent.child.kill();
        panic!(
            "the agent did not say `policy live` within 30 s:\n{}",
            agent.startup_log.join("\n")
        );
    }

    /// SIGKILL, and waits for the exit: the agent gets no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 15 s for the exit (SIGKILL after that). A failed exit
    /// prints what the agent wrote, for the test's log.
    pub fn stop(mut self) -> ExitStatus {
        let status = self.terminate();
        if !status.success() {
            while let Ok(line) = self.output.recv_timeout(Duration::from_millis(100)) {
                eprintln!("agent: {line:?}");
            }
        }
        status
    }

    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: plain kill(2) on our child (nsenter execs the agent in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait for the agent");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A test that panicked before `stop` must not leave the agent running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on the agent's metrics address inside `netns`: (status code, body).
pub fn http_get(netns: &str, address: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    crate::in_netns(netns, || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect to the agent");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    })
}
