//! Prints the capability report of a directory (default: the current one),
//! and how long it took: `cargo run -p sparsekit-caps --example caps -- DIR [OTHER_DIR]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let mut options = sparsekit_caps::CapsOptions::new();
    if let Some(other) = args.next() {
        options = options.cross_fs_dir(other);
    }
    let start = std::time::Instant::now();
    let report = options.probe(&dir)?;
    let elapsed = start.elapsed();
    println!("{report}");
    println!("({} ms)", elapsed.as_millis());
    Ok(())
}
