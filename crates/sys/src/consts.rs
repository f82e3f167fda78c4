//! Kernel constants newer than rustix and libc, each with the kernel that
//! added it. Op crates use these names, never the numbers.

use rustix::fs::{FallocateFlags, StatxFlags};

/// `STATX_DIO_READ_ALIGN` (Linux 6.16): asks for
/// `stx_dio_read_offset_align`, a separate, possibly smaller, file-offset
/// alignment for O_DIRECT reads. `include/uapi/linux/stat.h`.
pub const STATX_DIO_READ_ALIGN: StatxFlags = StatxFlags::from_bits_retain(0x0002_0000);

/// `FALLOC_FL_WRITE_ZEROES` (Linux 6.17): allocate the range and zero it by
/// the device's write-zeroes command, so it reads as zeros and is written,
/// not unwritten. `include/uapi/linux/falloc.h`.
pub const FALLOC_FL_WRITE_ZEROES: FallocateFlags = FallocateFlags::from_bits_retain(0x80);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_uapi_headers() {
        assert_eq!(STATX_DIO_READ_ALIGN.bits(), 0x0002_0000);
        assert_eq!(FALLOC_FL_WRITE_ZEROES.bits(), 0x80);
    }
}
