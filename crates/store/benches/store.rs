//! `cargo bench -p store`: the store figures of issue 2 (see `store::bench`).

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            std::process::exit(1);
        }
    };
    let report = store::bench::run(dir.path());
    println!("{report}");
    if report.error.is_some() {
        std::process::exit(1);
    }
}
