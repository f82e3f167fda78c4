//! Names of file types for messages ("not a regular file: it is a fifo").

use rustix::fs::FileType;

/// `"regular file"`, `"directory"`, `"symbolic link"`, `"fifo"`,
/// `"socket"`, `"character device"`, `"block device"`, else
/// `"special file"`: the words every sparsekit error uses.
pub fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}
