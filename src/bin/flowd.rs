fn main() {
    eprintln!("flowd: the daemon is not built yet; see README.md");
    std::process::exit(2);
}
