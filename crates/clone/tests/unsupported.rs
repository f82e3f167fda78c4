//! On /tmp (ext4 on the project machines, no reflink) FICLONE must report
//! `Unsupported`, not succeed silently and not copy.

use std::io::Write;

#[test]
fn clone_file_on_tmp_is_unsupported_or_shares() {
    let mut src = tempfile::tempfile().unwrap();
    src.write_all(b"hello").unwrap();
    let dst = tempfile::tempfile().unwrap();
    match sparsekit_clone::clone_file(&src, &dst) {
        // A developer's /tmp may be xfs or btrfs: then the clone is real.
        Ok(()) => assert_eq!(dst.metadata().unwrap().len(), 5),
        Err(e) => {
            assert!(e.is_unsupported(), "{e}");
            assert_eq!(dst.metadata().unwrap().len(), 0);
        }
    }
}
