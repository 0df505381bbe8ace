//! Launching real processes (the `portico` binary) and watching their output.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process whose standard output and error are collected line by line.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `program` with `args` and extra environment variables.
    pub fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start(Command::new(program), program, args, envs)
    }

    /// [`Process::spawn`] as the leader of a new process group, so that
    /// [`Process::signal_group`] reaches whatever it starts in turn (chromedriver's browser).
    pub fn spawn_group(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(program);
        cmd.process_group(0);
        Self::start(cmd, program, args, envs)
    }

    fn start(mut cmd: Command, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let l = lines.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(out).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    l.lock().expect("lock").push(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let l = lines.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    l.lock().expect("lock").push(line);
                }
            });
        }
        Self { child, lines }
    }

    /// Every line printed so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line containing `needle`; panics with the output after `timeout`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "no line with `{needle}` within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Counts lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// The JSON log lines (with `PORTICO_LOG_FORMAT=json`) whose message is `message`.
    pub fn logs(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }

    /// Waits for a JSON log line with `message` and returns its fields.
    pub async fn wait_for_log(&self, message: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.logs(message).pop() {
                return v["fields"].clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log `{message}` within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends a signal (e.g. `libc::SIGHUP`).
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    /// Sends a signal to the whole process group of a process started with
    /// [`Process::spawn_group`]; answers whether `kill` succeeded (no group left is `false`).
    /// Blocking and short, so that a `Drop` can call it.
    pub fn signal_group(&self, sig: i32) -> bool {
        let Some(pid) = self.child.id() else {
            return false;
        };
        std::process::Command::new("kill")
            .args(["-s", &sig.to_string(), "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Resident memory now and its peak, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}
