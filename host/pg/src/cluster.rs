//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into
//! a temporary directory, `pg_ctl start` listening on a Unix socket in it
//! only (no TCP port, nothing another process on the machine can reach by
//! accident), stopped and removed on drop. The binaries come from
//! `CHARTER_PG_BIN` (a directory), else `pg_config --bindir`, else
//! PostgreSQL 15's Debian location, else `PATH`. As root (CI), the server
//! runs as the `postgres` user, as PostgreSQL requires.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throwaway cluster (see the module docs).
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CHARTER_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").exists() {
            return Some(d);
        }
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").exists() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Whether PostgreSQL's server binaries are installed here.
    pub fn available() -> bool {
        bin_dir().is_some()
    }

    /// What a test starts from: a running cluster, or `None`, said loudly
    /// on stderr, when PostgreSQL is not installed and the run does not
    /// require it (`tests/run.sh` sets `CHARTER_REQUIRE_PG`). A cluster
    /// that is installed but cannot start is a failure, not a skip.
    pub fn for_tests() -> Option<Cluster> {
        if !Cluster::available() && std::env::var_os("CHARTER_REQUIRE_PG").is_none() {
            eprintln!(
                "SKIPPED: PostgreSQL is not installed (install postgresql-15; tests/run.sh requires it)"
            );
            return None;
        }
        match Cluster::start() {
            Ok(c) => Some(c),
            Err(e) => panic!("start a throwaway PostgreSQL cluster: {e}"),
        }
    }

    /// Start a cluster. Errors name what failed, with the server's log.
    pub fn start() -> Result<Cluster, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL is not installed (no initdb found: install postgresql-15, or set CHARTER_PG_BIN)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("charter-pg.")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let as_postgres = is_root();
        let c = Cluster {
            dir,
            bin,
            as_postgres,
        };
        c.own_dir()?;
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        )?;
        c.start_server()?;
        Ok(c)
    }

    /// As root the server runs as `postgres` (it refuses to run as
    /// root), which must own (and reach) its directory.
    fn own_dir(&self) -> Result<(), String> {
        if !self.as_postgres {
            return Ok(());
        }
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(self.dir.path())
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err("chown of the cluster directory to postgres failed".into())
        }
    }

    /// `pg_ctl start` on the data directory, listening on the socket in
    /// this cluster's directory only.
    fn start_server(&self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses='' -k {} -c max_connections=200",
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )
        .map_err(|e| {
            format!(
                "{e}\nserver log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Restart the server as a crash would (`pg_ctl -m immediate`): every
    /// session is cut; committed transactions survive (WAL replay).
    pub fn restart(&self) -> Result<(), String> {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )
    }

    /// A streaming replica of this cluster, made synchronous: from its
    /// start on, a commit here returns only once the replica has the
    /// commit's WAL on disk, so whatever a client was told is committed
    /// survives this cluster's death and the replica's promotion. Its
    /// own socket directory; stopped and removed on drop like this one.
    pub fn standby(&self) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("charter-pg-standby.")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let s = Cluster {
            dir,
            bin: self.bin.clone(),
            as_postgres: self.as_postgres,
        };
        s.own_dir()?;
        // A copy of the primary that follows its WAL (`-R`: standby.signal
        // and the primary's address written into the copy).
        self.run(
            "pg_basebackup",
            &[
                "-D",
                &s.data(),
                "-h",
                &self.socket_dir().display().to_string(),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--no-sync",
                // A checkpoint now, not spread over the next minutes.
                "-c",
                "fast",
            ],
        )?;
        s.start_server()?;
        // (ALTER SYSTEM runs outside a transaction: a statement of its own.)
        self.sql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.sql("postgres", "SELECT pg_reload_conf()")?;
        let start = std::time::Instant::now();
        loop {
            let state = self.query_one(
                "postgres",
                "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication",
            )?;
            if state == "sync" {
                return Ok(s);
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                return Err(format!(
                    "the standby did not become synchronous in 60 s (sync_state {state:?}); its log:\n{}",
                    std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kill the server as a crashed machine would (`pg_ctl -m immediate`)
    /// and leave it down.
    pub fn kill(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Promote a standby ([`Cluster::standby`]) to a primary that takes
    /// writes; returns once it does.
    pub fn promote(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-t", "60", "promote"])
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed: {}{}",
                path.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connection string for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} user=postgres dbname={db}",
            self.socket_dir().display()
        )
    }

    /// Create database `name` (a plain identifier).
    pub fn create_db(&self, name: &str) -> Result<(), String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("not a plain database name: {name:?}"));
        }
        self.sql("postgres", &format!("CREATE DATABASE {name}"))
    }

    /// Run `sql` (statements) on database `db`.
    pub fn sql(&self, db: &str, sql: &str) -> Result<(), String> {
        let sql = sql.to_string();
        self.with_client(db, |client| async move {
            client.batch_execute(&sql).await.map_err(|e| {
                format!(
                    "{sql}: {}",
                    e.as_db_error()
                        .map_or(e.to_string(), |d| d.message().to_string())
                )
            })
        })
    }

    /// The one text value `sql` selects on database `db`.
    fn query_one(&self, db: &str, sql: &str) -> Result<String, String> {
        let sql = sql.to_string();
        self.with_client(db, |client| async move {
            let row = client
                .query_one(&sql, &[])
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok(row.get::<_, String>(0))
        })
    }

    fn with_client<T, F, Fut>(&self, db: &str, f: F) -> Result<T, String>
    where
        F: FnOnce(std::sync::Arc<tokio_postgres::Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let url = self.url(db);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect {url}: {e}"))?;
            let h = tokio::spawn(conn);
            let client = std::sync::Arc::new(client);
            let r = f(client.clone()).await;
            drop(client);
            let _ = h.await;
            r
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
