//! Our binaries (`gateway`, `workers ...`) as child processes: found in the target
//! directory, started with exactly the environment a test gives them, waited for until they
//! answer on a port of their own, crashed (SIGKILL) and restarted on demand, and stopped on
//! drop (SIGTERM, then SIGKILL if they linger). What a child writes is kept, not printed:
//! [`Process::stop`] returns it, and a test that fails shows it (in its captured output).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::free_port;

/// Variables a child inherits from the test process; everything else is cleared, so a
/// developer's shell (`ORDERS_EXCHANGE`, `MEILI_URL`, ...) cannot change what a test runs.
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];
/// How long a child may take to answer its readiness probe.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The binary `name` of this workspace, next to the running test or bench executable:
/// `target/debug/<name>` for tests, `target/release/<name>` for benches. Panics, naming the
/// build command, when it has not been built.
pub fn target_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable's directory");
    if dir.file_name().is_some_and(|last| last == "deps") {
        dir = dir.parent().expect("the profile directory");
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        let release = dir.file_name().is_some_and(|last| last == "release");
        panic!(
            "{} is missing: build the binaries first with `cargo build{} --bins` \
             (`make {}` does it)",
            path.display(),
            if release { " --release" } else { "" },
            if release { "bench" } else { "test" },
        );
    }
    path
}

/// Where a child is told to listen.
#[derive(Debug, Clone)]
enum Listen {
    Nowhere,
    /// `VAR=127.0.0.1:<port>`.
    Env(String),
    /// `--flag 127.0.0.1:<port>` after the other arguments.
    Arg(String),
}

/// How to start a child: program, arguments, environment, where it listens and how to tell
/// it is ready. [`Launch::start`] makes a [`Process`].
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    listen: Listen,
    ready_path: String,
}

impl Launch {
    /// Runs `program` (for a binary of the crate under test: `env!("CARGO_BIN_EXE_<name>")`).
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            listen: Listen::Nowhere,
            ready_path: "/healthz".into(),
        }
    }

    /// Runs the workspace binary `name` found by [`target_binary`].
    pub fn binary(name: &str) -> Self {
        Self::new(target_binary(name))
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable (`RUST_LOG` is `warn` unless set here).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(existing, _)| *existing != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets variables.
    pub fn envs<'a>(self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Self {
        vars.into_iter()
            .fold(self, |launch, (key, value)| launch.env(*key, *value))
    }

    /// Picks a free port, sets `var=127.0.0.1:<port>`, and waits for `GET /healthz` on it
    /// to answer 200 at start (the gateway: `GATEWAY_ADDR`).
    pub fn listen_env(mut self, var: &str) -> Self {
        self.listen = Listen::Env(var.into());
        self
    }

    /// Picks a free port, appends `flag 127.0.0.1:<port>`, and waits for `GET /healthz`
    /// on it to answer 200 at start (the workers: `--admin-addr`).
    pub fn listen_arg(mut self, flag: &str) -> Self {
        self.listen = Listen::Arg(flag.into());
        self
    }

    /// Probes this path instead of `/healthz` (e.g. `/readyz`).
    pub fn ready_path(mut self, path: &str) -> Self {
        self.ready_path = path.into();
        self
    }

    /// Starts the child and, when it listens, waits until it is ready (30 s at most).
    pub async fn start(self) -> Process {
        let port = match self.listen {
            Listen::Nowhere => None,
            _ => Some(free_port()),
        };
        let mut process = Process {
            launch: self,
            port,
            child: None,
            stdout: Arc::default(),
            stderr: Arc::default(),
            readers: Vec::new(),
        };
        process.spawn_and_wait().await;
        process
    }
}

/// A running child (see [`Launch`]). Dropping it stops it: SIGTERM, then SIGKILL after 10 s;
/// when the test is failing (panicking), what the child wrote to stderr is printed then.
#[derive(Debug)]
pub struct Process {
    launch: Launch,
    port: Option<u16>,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    /// The port it listens on, kept across restarts.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The names of the child's threads (`/proc/<pid>/task/*/comm`, at most 15 bytes each),
    /// sorted; panics if it is not running.
    pub fn thread_names(&self) -> Vec<String> {
        let pid = self.pid().expect("the process runs");
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("/proc lists the process's threads")
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim_end().to_owned())
            .collect();
        names.sort();
        names
    }

    /// `http://127.0.0.1:<port>`; panics if it was not told to listen.
    pub fn base(&self) -> String {
        let port = self.port.expect("this process was started without a port");
        format!("http://127.0.0.1:{port}")
    }

    /// `base()` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Sends SIGKILL and reaps the child: a crash, nothing is flushed or released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the child cleanly (SIGTERM, SIGKILL after 10 s), starts the same command again
    /// (same port, arguments and environment) and waits until it is ready.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || terminate(&mut child))
                .await
                .expect("waiting for the child");
        }
        self.spawn_and_wait().await;
    }

    /// SIGKILL (a crash: nothing is flushed or released), then starts the same command again
    /// and waits until it is ready.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn_and_wait().await;
    }

    /// Sends SIGTERM and waits for the child to exit (SIGKILL after 10 s); returns its status
    /// and everything it wrote (since the first start).
    pub async fn stop(self) -> Output {
        self.finish(true).await
    }

    /// As [`Process::stop`], and asserts that SIGTERM ended the child cleanly (exit 0, not
    /// the shutdown deadline's 124), showing what it wrote when not.
    pub async fn stop_cleanly(self) -> Output {
        let output = self.stop().await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Waits for the child to exit by itself; returns its status and everything it wrote
    /// (since the first start).
    pub async fn wait(self) -> Output {
        self.finish(false).await
    }

    async fn finish(mut self, send_sigterm: bool) -> Output {
        let mut child = self.child.take().expect("a running child");
        let readers = std::mem::take(&mut self.readers);
        let status = tokio::task::spawn_blocking(move || {
            let status = if send_sigterm {
                terminate(&mut child)
            } else {
                child.wait().expect("waiting for the child")
            };
            // The readers end when the child's pipes close: then all it wrote is kept.
            for reader in readers {
                let _ = reader.join();
            }
            status
        })
        .await
        .expect("waiting for the child");
        Output {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// What the child wrote to stderr so far (since the first start).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    async fn spawn_and_wait(&mut self) {
        self.spawn();
        let Some(port) = self.port else { return };
        let url = format!("http://127.0.0.1:{port}{}", self.launch.ready_path);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "{} exited with {status} before {url} answered{}",
                    self.describe(),
                    self.captured_hint()
                );
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "{} did not answer {url} within {READY_WITHIN:?}{}",
                self.describe(),
                self.captured_hint()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(&mut self) {
        let launch = &self.launch;
        let mut command = Command::new(&launch.program);
        command.args(&launch.args).env_clear();
        for key in INHERITED {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.envs(launch.env.iter().map(|(key, value)| (key, value)));
        if let Some(port) = self.port {
            let address = format!("127.0.0.1:{port}");
            match &launch.listen {
                Listen::Env(var) => {
                    command.env(var, address);
                }
                Listen::Arg(flag) => {
                    command.args([flag.as_str(), &address]);
                }
                Listen::Nowhere => {}
            }
        }
        // Read continuously by threads of our own, so the child never blocks on a full pipe.
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.describe()));
        if let Some(out) = child.stdout.take() {
            self.readers.push(collect(out, self.stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            self.readers.push(collect(err, self.stderr.clone()));
        }
        self.child = Some(child);
    }

    fn describe(&self) -> String {
        let name = self
            .launch
            .program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("`{name} {}`", self.launch.args.join(" "))
    }

    fn captured_hint(&self) -> String {
        format!("; its stderr:\n{}", self.stderr())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            // eprintln! is captured by the test harness: shown with the failure only.
            eprintln!(
                "--- {} wrote to stderr:\n{}",
                self.describe(),
                self.stderr()
            );
        }
    }
}

/// SIGTERM, wait up to [`STOP_WITHIN`], then SIGKILL; the exit status.
fn terminate(child: &mut Child) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < STOP_WITHIN {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("reap the killed child")
}

/// Copies a child's pipe into `into` on a thread of its own until the pipe closes.
fn collect(
    mut pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(read) = pipe.read(&mut buffer) {
            if read == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buffer[..read]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "cargo build --bins")]
    fn a_missing_binary_names_the_build_command() {
        target_binary("no-such-binary");
    }

    #[tokio::test]
    async fn wait_returns_the_status_and_what_the_child_wrote() {
        let child = Launch::new("sh")
            .args(["-c", "echo out; echo \"err $GREETING\" >&2; exit 3"])
            .env("GREETING", "hello")
            .start()
            .await;
        let output = child.wait().await;
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err hello\n");
    }

    #[tokio::test]
    async fn the_environment_is_only_what_the_test_gives() {
        std::env::set_var("TESTKIT_SHOULD_NOT_LEAK", "1");
        let child = Launch::new("sh")
            .args(["-c", "echo \"[$TESTKIT_SHOULD_NOT_LEAK][$RUST_LOG]\""])
            .start()
            .await;
        assert_eq!(child.wait().await.stdout, b"[][warn]\n");
    }
}
