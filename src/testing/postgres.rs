//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, started on a free
//! loopback port with trust authentication, stopped and removed on drop. It runs the binaries of
//! Debian's `postgresql` package; as root (CI) it runs them as the `postgres` user, since the
//! server refuses to run as root. Without the binaries, starting fails with a message naming the
//! package: a test that needs the database never skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `runuser -u postgres --` as root, else nothing.
    as_user: Vec<String>,
}

impl PostgresServer {
    /// Creates and starts a server. Panics with the missing package's name, or the server's log.
    pub fn start() -> PostgresServer {
        let bin = server_binaries().unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin or on PATH: \
                 install Debian's `postgresql` package (apt-get install postgresql); .ci/run does"
            )
        });
        let dir = std::env::temp_dir().join(format!("netmorph-pg-{}-{}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let as_user = if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "chown {} to the postgres user (created by Debian's `postgresql` package) failed", dir.display());
            vec!["runuser".into(), "-u".into(), "postgres".into(), "--".into()]
        } else {
            vec![]
        };
        let port = free_port();
        let server = PostgresServer { bin, dir, port, as_user };
        server.run("initdb", &["-D", &server.data(), "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        server.start_server();
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (as a crash would, `-m immediate`) and starts it again.
    pub fn restart(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        self.start_server();
    }

    /// Stops the server (`-m immediate`): connections break until [`start_again`](Self::start_again).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    pub fn start_again(&self) {
        self.start_server();
    }

    fn start_server(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("server.log");
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log.to_string_lossy(), "-w", "-t", "60", "start"]);
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// `program` of the server's binaries, run as the server's user.
    fn command(&self, program: &str) -> Command {
        match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed:\n{}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or the directory of an `initdb` on PATH.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    versions.pop().or_else(|| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(PathBuf::from)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's user.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
