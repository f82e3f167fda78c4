//! Did sharing really happen? FIEMAP's `SHARED` flag says.

use rustix::fd::AsFd;
use sparsekit_extents::{ExtentKind, MapError, MapOptions, Method};
use std::ops::Range;

/// How a byte range of a file is stored, by FIEMAP: shared with another
/// file (reflinked, deduped, snapshotted), written data of this file alone,
/// preallocated but unwritten, or not allocated at all.
///
/// `shared + exclusive + unwritten + holes` is the length of the range
/// clipped to the file size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sharing {
    /// Bytes in extents marked `FIEMAP_EXTENT_SHARED`.
    pub shared: u64,
    /// Bytes in written data extents not marked shared.
    pub exclusive: u64,
    /// Bytes in unwritten (preallocated) extents not marked shared: they
    /// read as zeros; xfs's speculative preallocation leaves such extents
    /// between data written far apart.
    pub unwritten: u64,
    /// Bytes in holes.
    pub holes: u64,
}

impl Sharing {
    /// Bytes with storage behind them (`shared + exclusive + unwritten`).
    pub fn allocated(&self) -> u64 {
        self.shared + self.exclusive + self.unwritten
    }
}

/// `ioctl(fd, FS_IOC_FIEMAP, …)` over `range`—Counts shared, exclusive,
/// unwritten and unallocated bytes, from the `FIEMAP_EXTENT_SHARED` flags.
///
/// The range is clipped to the file size. FIEMAP is asked with
/// `FIEMAP_FLAG_SYNC`, so dirty data is written back first and the answer
/// matches what is on disk.
///
/// # Errors
/// [`MapError::Unsupported`] where the filesystem has no FIEMAP (tmpfs,
/// many FUSE and network filesystems): sharing cannot be observed there;
/// [`MapError::NotMappable`] for directories and special files.
///
/// # References
/// - Linux `Documentation/filesystems/fiemap.rst` (`FIEMAP_EXTENT_SHARED`
///   since Linux 2.6.36; reported by btrfs, and by xfs since 4.9)
#[doc(alias = "FIEMAP_EXTENT_SHARED")]
pub fn sharing<Fd: AsFd>(fd: &Fd, range: Range<u64>) -> Result<Sharing, MapError> {
    let map = MapOptions::new()
        .method(Method::Fiemap)
        .sync(true)
        .range(range)
        .map(fd)?;
    let mut sharing = Sharing::default();
    for extent in map {
        let extent = extent?;
        match extent.kind {
            ExtentKind::Hole => sharing.holes += extent.length,
            _ if extent.is_shared() => sharing.shared += extent.length,
            ExtentKind::Unwritten => sharing.unwritten += extent.length,
            _ => sharing.exclusive += extent.length,
        }
    }
    Ok(sharing)
}

/// The number of bytes of `range` in extents FIEMAP marks shared: the quick
/// check that a clone or dedupe really shared storage. See [`sharing`].
#[doc(alias = "FIEMAP_EXTENT_SHARED")]
pub fn shared_bytes<Fd: AsFd>(fd: &Fd, range: Range<u64>) -> Result<u64, MapError> {
    sharing(fd, range).map(|s| s.shared)
}
