//! The report on tmpfs, redacted of machine-specific values, as an insta
//! snapshot: what a tmpfs does on the running kernel. The test bench runs
//! the same comparison on its own tmpfs mount.

use std::path::Path;

const TMPFS_MAGIC: u64 = 0x0102_1994;

#[test]
fn tmpfs_report() {
    let shm = Path::new("/dev/shm");
    let is_tmpfs =
        rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as u64 & 0xffff_ffff == TMPFS_MAGIC);
    if !is_tmpfs {
        eprintln!(
            "SKIPPED tmpfs_report: /dev/shm is not a tmpfs here; the test bench runs the same \
             snapshot check on its tmpfs mount (scenario caps/tmpfs_snapshot)"
        );
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let report = sparsekit_caps::probe(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    insta::assert_toml_snapshot!("tmpfs_report", report.redacted());
}
