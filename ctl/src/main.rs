//! `palisadectl`.

fn main() -> std::process::ExitCode {
    palisadectl::cli::main()
}
