//! [`SmallDisk`]: a program run with a small tmpfs of its own mounted, to
//! fill a real file system (a full disk while recording).
//!
//! The program runs under `unshare -rm` (a new user and mount namespace, so
//! no privileges are needed where user namespaces are allowed) after
//! `mount -t tmpfs -o size=<N>k`; the mount is private to it. When it
//! exits, what the mount holds is copied to [`SmallDisk::kept`] (the tmpfs
//! goes away with the namespace), and the program's exit status is
//! returned. A test that cannot mount one (no `unshare`, or user
//! namespaces refused) skips loudly, and fails with `CI=true`.
//!
//! ```no_run
//! # use std::path::Path;
//! let dir = tempfile::tempdir().unwrap();
//! if let Some(disk) = jam_tests::small_disk::SmallDisk::new(dir.path(), 16) {
//!     let status = disk.command(Path::new("/bin/dd"))
//!         .arg("if=/dev/zero")
//!         .arg(format!("of={}/x", disk.mount().display()))
//!         .status()
//!         .unwrap();
//!     assert!(!status.success(), "16 KiB fill up");
//!     assert!(disk.kept().join("x").is_file());
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mounts the tmpfs at `$1` (size `$2` KiB), runs the rest, then copies
/// the mount's content to `$3` and exits with the program's status. `sh`
/// waits for the program, so the copy sees every byte it wrote.
const SCRIPT: &str = r#"m="$1"; size="$2"; kept="$3"; shift 3
mount -t tmpfs -o size="$size"k none "$m" || exit 125
"$@"; rc=$?
cp -a "$m"/. "$kept"/
exit $rc"#;

/// A small tmpfs for one program at a time: see the module docs.
#[derive(Debug, Clone)]
pub struct SmallDisk {
    unshare: PathBuf,
    mount: PathBuf,
    kept: PathBuf,
    size_kib: u32,
}

impl SmallDisk {
    /// A tmpfs of `size_kib` KiB (tmpfs counts whole 4 KiB pages) to be
    /// mounted at `dir/disk`, copied to `dir/kept` after each run; checks
    /// first that such a mount works here. `None` (a loud skip outside CI)
    /// when it does not.
    pub fn new(dir: &Path, size_kib: u32) -> Option<SmallDisk> {
        let unshare = crate::require_tool("unshare", "apt-get install util-linux")?;
        let disk = SmallDisk {
            unshare,
            mount: dir.join("disk"),
            kept: dir.join("kept"),
            size_kib,
        };
        for d in [&disk.mount, &disk.kept] {
            std::fs::create_dir_all(d).expect("creating the mount point");
        }
        let probe = disk.command(Path::new("true")).output();
        match probe {
            Ok(out) if out.status.success() => Some(disk),
            Ok(out) => crate::missing(
                &format!(
                    "a tmpfs mounted in a user namespace (`unshare -rm` then `mount -t tmpfs`: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run as root",
            ),
            Err(e) => crate::missing(&format!("`unshare` ({e})"), "apt-get install util-linux"),
        }
    }

    /// Where the program sees the tmpfs.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Where the tmpfs's content is after the program exits.
    pub fn kept(&self) -> &Path {
        &self.kept
    }

    /// A command that runs `program` (add its arguments) with the tmpfs
    /// mounted at [`SmallDisk::mount`]. It exits with the program's status,
    /// or 125 when the mount fails. Killing it kills the wrapping shell,
    /// not the program: give the program a way to end by itself.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(&self.unshare);
        c.args(["-rm", "sh", "-c", SCRIPT, "sh"])
            .arg(&self.mount)
            .arg(self.size_kib.to_string())
            .arg(&self.kept)
            .arg(program);
        c
    }
}
