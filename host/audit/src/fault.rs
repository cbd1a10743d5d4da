//! Crash injection for tests (the `CHARTER_TEST_CRASH_AT` hook, see the
//! crate docs). Every write to the log file and every `fdatasync` goes
//! through [`LogFile`], which counts the I/O boundaries — just before and
//! just after each write syscall and each sync — and crashes at the n-th.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable, read once when a log is opened.
pub const CRASH_ENV: &str = "CHARTER_TEST_CRASH_AT";

/// What reaches the file when the crash hits just before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Torn {
    /// Nothing of that write.
    No,
    /// Its first half (a torn write).
    Half,
    /// Its first half, then zeros for the rest (the file grew but the data
    /// was lost: a power cut).
    HalfThenZeros,
}

#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// 1-based boundary to crash at; 0 only counts.
    pub at: u64,
    pub torn: Torn,
    /// `std::process::abort()` (the environment hook); otherwise the crash
    /// is simulated: nothing more reaches the file and every later write
    /// or sync fails, so a test can reopen from the bytes on disk.
    pub abort: bool,
    /// Boundaries passed so far.
    pub count: Arc<AtomicU64>,
}

impl Fault {
    /// The hook from the environment, if set: `<n>`, `<n>:partial` or
    /// `<n>:zeros`.
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(CRASH_ENV) {
            Ok(s) => Fault::parse(&s).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{CRASH_ENV}: {e}")),
        }
    }

    pub fn parse(s: &str) -> Result<Fault, String> {
        let bad =
            || format!("{CRASH_ENV}={s:?}: expected <n>, <n>:partial or <n>:zeros with n >= 1");
        let (n, torn) = match s.trim().split_once(':') {
            None => (s.trim(), Torn::No),
            Some((n, "partial")) => (n, Torn::Half),
            Some((n, "zeros")) => (n, Torn::HalfThenZeros),
            Some(_) => return Err(bad()),
        };
        let at: u64 = n.parse().map_err(|_| bad())?;
        if at == 0 {
            return Err(bad());
        }
        Ok(Fault {
            at,
            torn,
            abort: true,
            count: Arc::default(),
        })
    }
}

/// The log file, as the writer sees it.
pub(crate) struct LogFile {
    file: File,
    fault: Option<Fault>,
    crashed: bool,
}

impl LogFile {
    pub fn new(file: File, fault: Option<Fault>) -> LogFile {
        LogFile {
            file,
            fault,
            crashed: false,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Pass one boundary; true if the crash is due here.
    fn boundary(&mut self) -> bool {
        self.fault
            .as_ref()
            .is_some_and(|f| f.count.fetch_add(1, Ordering::Relaxed) + 1 == f.at)
    }

    fn crash(&mut self) -> io::Error {
        if self.fault.as_ref().is_some_and(|f| f.abort) {
            std::process::abort();
        }
        self.crashed = true;
        io::Error::other("simulated crash (test hook)")
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("simulated crash (test hook)"))
        } else {
            Ok(())
        }
    }

    pub fn sync_data(&mut self) -> io::Result<()> {
        self.check_alive()?;
        if self.boundary() {
            return Err(self.crash());
        }
        self.file.sync_data()?;
        if self.boundary() {
            return Err(self.crash());
        }
        Ok(())
    }

    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.check_alive()?;
        self.file.set_len(len)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_alive()?;
        if self.boundary() {
            let torn = self.fault.as_ref().map_or(Torn::No, |f| f.torn);
            let half = buf.len() / 2;
            match torn {
                Torn::No => {}
                Torn::Half => self.file.write_all(&buf[..half])?,
                Torn::HalfThenZeros => {
                    self.file.write_all(&buf[..half])?;
                    self.file.write_all(&vec![0; buf.len() - half])?;
                }
            }
            return Err(self.crash());
        }
        let n = self.file.write(buf)?;
        if self.boundary() {
            return Err(self.crash());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_alive()
    }
}
