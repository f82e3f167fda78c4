//! The NFS client's per-operation counters in `/proc/self/mountstats`: what
//! tells a server-side `COPY` from an in-kernel splice (`READ`/`WRITE`).
//!
//! One block per mount: `device 127.0.0.1:/ mounted on /mnt with fstype
//! nfs4 statvers=1.1`, then for NFS mounts a `per-op statistics` section of
//! lines `        COPY: 1 1 0 252 144 0 21 22 0` whose first number is
//! the count of operations sent. Mount points are escaped as in
//! `/proc/self/mountinfo` (`\040` for a space).

use std::collections::BTreeMap;

/// Per-operation counts (`"COPY"` → operations sent) of the NFS mount at
/// `mount_point` in a `mountstats` text; `None` if the mount is not there
/// or has no per-op section (not NFS).
pub(crate) fn op_counts(text: &str, mount_point: &str) -> Option<BTreeMap<String, u64>> {
    let mut lines = text.lines();
    // The mount's own block: up to the next `device` line.
    lines.find(|l| {
        l.strip_prefix("device ")
            .and_then(|rest| rest.split(" mounted on ").nth(1))
            .and_then(|rest| rest.split(" with fstype ").next())
            .is_some_and(|mp| crate::fsinfo::unescape(mp) == mount_point)
    })?;
    let block: Vec<&str> = lines.take_while(|l| !l.starts_with("device ")).collect();
    let start = block.iter().position(|l| l.trim() == "per-op statistics")?;
    let mut ops = BTreeMap::new();
    for l in &block[start + 1..] {
        let Some((name, rest)) = l.trim().split_once(':') else {
            continue;
        };
        if let Some(Ok(n)) = rest.split_whitespace().next().map(str::parse::<u64>) {
            ops.insert(name.to_owned(), n);
        }
    }
    Some(ops)
}

/// [`op_counts`] of this process's view of `mount_point`.
pub(crate) fn read_op_counts(mount_point: &str) -> Option<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/self/mountstats").ok()?;
    op_counts(&text, mount_point)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
device /dev/loop0 mounted on /srv/x with fstype xfs
device 127.0.0.1:/ mounted on /mnt/a\\040b with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.2
\tper-op statistics
\t        NULL: 1 1 0 44 24 39 9 53 0
\t        READ: 0 0 0 0 0 0 0 0 0
\t       WRITE: 16 16 0 4197504 2944 3202 2132 5496 0
\t        COPY: 1 1 0 252 144 0 21 22 0
device 127.0.0.1:/srv/x mounted on /mnt/v3 with fstype nfs statvers=1.1
\tper-op statistics
\t        READ: 32 32 0 3456 4198400 60 362 434 0
\t       WRITE: 16 16 0 4196160 2176 507 325 878 0
";

    #[test]
    fn counts_are_read_from_the_right_mount_only() {
        let v4 = op_counts(TEXT, "/mnt/a b").unwrap();
        assert_eq!(v4.get("COPY"), Some(&1));
        assert_eq!(v4.get("WRITE"), Some(&16));
        assert_eq!(v4.get("READ"), Some(&0));
        let v3 = op_counts(TEXT, "/mnt/v3").unwrap();
        assert_eq!(v3.get("READ"), Some(&32));
        assert_eq!(v3.get("COPY"), None, "v3 has no COPY; {v3:?}");
    }

    #[test]
    fn a_local_or_absent_mount_has_no_counters() {
        assert_eq!(op_counts(TEXT, "/srv/x"), None);
        assert_eq!(op_counts(TEXT, "/nowhere"), None);
        assert_eq!(op_counts("", "/mnt/v3"), None);
    }
}
