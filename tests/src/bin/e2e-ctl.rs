//! `palisadectl` under a test name, for end-to-end tests.

fn main() -> std::process::ExitCode {
    palisadectl::cli::main()
}
