//! What the benchmarks read about a server from the operating system: the process's resident
//! memory and the bytes it caused to be written to disk (Linux `/proc/<pid>/status` and
//! `/proc/<pid>/io`), the CPU time its threads ran (`schedstat`), and the size of its data
//! dir. Elsewhere the `/proc` figures are absent.

use std::path::Path;
use std::time::Duration;

/// One reading of one server.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ServerSample {
    /// `VmRSS`, in bytes.
    pub rss_bytes: Option<u64>,
    /// `write_bytes`: bytes this process sent to the storage layer since it started (page
    /// cache writeback it caused included, whenever the kernel does it).
    pub write_bytes: Option<u64>,
    /// The files in the data dir, in bytes (the log shrinks when it is compacted).
    pub dir_bytes: u64,
}

/// Reads the figures of process `pid` (if running) with its data dir `dir`.
pub(super) fn sample(pid: Option<u32>, dir: &Path) -> ServerSample {
    let read = |file: &str| {
        pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
    };
    ServerSample {
        rss_bytes: read("status").as_deref().and_then(rss_bytes),
        write_bytes: read("io").as_deref().and_then(write_bytes),
        dir_bytes: dir_bytes(dir),
    }
}

/// `VmRSS:    1234 kB` of `/proc/<pid>/status`, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// `write_bytes: 1234` of `/proc/<pid>/io`.
fn write_bytes(io: &str) -> Option<u64> {
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time the live threads of process `pid` have run so far (Linux `schedstat`, to the
/// nanosecond, user and system time together).
pub(super) fn process_cpu(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let nanos = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| run_nanos(&stat))
        .sum();
    Some(Duration::from_nanos(nanos))
}

/// The CPU time thread `tid` of this process has run so far.
pub(super) fn thread_cpu(tid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    run_nanos(&stat).map(Duration::from_nanos)
}

/// The first field of a `schedstat` line: nanoseconds spent running.
fn run_nanos(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The total length of the files under `dir`. A file that vanishes while it is read (the
/// server replaces its log and snapshots by rename) just counts as gone.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_running_time_of_a_schedstat_line() {
        assert_eq!(run_nanos("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(run_nanos(""), None);
    }

    /// The two lines the benchmarks need, as Linux prints them.
    #[test]
    fn reads_rss_and_write_bytes() {
        let status = "Name:\tunderstudy\nVmPeak:\t  90000 kB\nVmRSS:\t   12345 kB\nThreads:\t5\n";
        assert_eq!(rss_bytes(status), Some(12345 * 1024));
        assert_eq!(rss_bytes("Name:\tx\n"), None);
        let io =
            "rchar: 10\nwchar: 20\nread_bytes: 0\nwrite_bytes: 40960\ncancelled_write_bytes: 0\n";
        assert_eq!(write_bytes(io), Some(40960));
    }

    /// Our own process can be read (on Linux), and a data dir is summed through subdirs.
    #[test]
    fn samples_this_process_and_a_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), [0u8; 23]).unwrap();
        let s = sample(Some(std::process::id()), dir.path());
        assert_eq!(s.dir_bytes, 123);
        if cfg!(target_os = "linux") {
            assert!(s.rss_bytes.is_some_and(|b| b > 0));
        }
        assert_eq!(sample(None, &dir.path().join("missing")).dir_bytes, 0);
    }
}
